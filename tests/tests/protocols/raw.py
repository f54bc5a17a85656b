"""Raw IP packets for netd's end-to-end tests: the protocols a socket API does not give
here (GRE, ESP, and SCTP, which this kernel has no stack for), sent and answered
through raw sockets.

  raw.py ask FAMILY PROTO DST [DPORT]   send one packet to DST and print the answer:
                                        "src=IP" and, for SCTP, "sport=P dport=P crc=ok|bad"
  raw.py echo FAMILY PROTO [PORT]       answer packets of PROTO (SCTP: to PORT, with a
                                        right CRC32c only) to their source, for ever

FAMILY is 4 or 6. An SCTP packet carries ports and a CRC32c; the others opaque bytes.
"""
import socket
import struct
import sys

SCTP = 132


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def sctp(sport, dport, chunk):
    head = struct.pack("!HHII", sport, dport, 0, 0)
    crc = crc32c(head + chunk)
    return head[:8] + struct.pack("<I", crc) + chunk


def sctp_fields(data):
    """(sport, dport, whether the CRC32c is right) of an SCTP packet."""
    sport, dport = struct.unpack("!HH", data[:4])
    zeroed = data[:8] + b"\0\0\0\0" + data[12:]
    ok = struct.unpack("<I", data[8:12])[0] == crc32c(zeroed)
    return sport, dport, ok


def sock(family, proto):
    af = socket.AF_INET if family == "4" else socket.AF_INET6
    return socket.socket(af, socket.SOCK_RAW, proto)


def payload(family, data):
    """What follows the IP header: IPv4 raw sockets hand over the header too."""
    if family == "4":
        return data[(data[0] & 0x0F) * 4:]
    return data


def body(proto, dport, sport=5000):
    if proto == SCTP:
        return sctp(sport, dport, b"\x01\x00\x00\x08netd")
    return b"\x00\x00\x08\x00netd raw"


def ask(family, proto, dst, dport):
    s = sock(family, proto)
    s.settimeout(2)
    for _ in range(3):
        s.sendto(body(proto, dport), (dst, 0))
        try:
            while True:
                data, addr = s.recvfrom(65535)
                data = payload(family, data)
                if proto != SCTP:
                    print(f"src={addr[0]}")
                    return 0
                sport, dp, ok = sctp_fields(data)
                if dp == 5000:
                    print(f"src={addr[0]} sport={sport} dport={dp} crc={'ok' if ok else 'bad'}")
                    return 0
        except socket.timeout:
            continue
    print("no answer", file=sys.stderr)
    return 1


def echo(family, proto, port):
    s = sock(family, proto)
    while True:
        data, addr = s.recvfrom(65535)
        data = payload(family, data)
        if proto == SCTP:
            sport, dport, ok = sctp_fields(data)
            if dport != port or not ok:
                continue
            s.sendto(sctp(port, sport, b"\x02\x00\x00\x08ack!"), (addr[0], 0))
        else:
            s.sendto(data, (addr[0], 0))
        print(f"src={addr[0]}", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "ask":
        sys.exit(ask(a[1], int(a[2]), a[3], int(a[4]) if len(a) > 4 else 9))
    if a[0] == "echo":
        echo(a[1], int(a[2]), int(a[3]) if len(a) > 3 else 9)
