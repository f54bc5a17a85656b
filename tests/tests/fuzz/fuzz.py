"""Random and malformed packets of both families for netd's fuzz test (scapy), and the
check of what left the host.

  fuzz.py send IFACE SRCMAC DSTMAC SRC4 SRC6 DST4 DST6 COUNT SEED
      COUNT frames out of IFACE: scapy's fuzz() of IPv4 and IPv6 with TCP, UDP, ICMP,
      ICMPv6, SCTP, GRE; other protocols; truncated headers and bad lengths; fragments
      at random offsets; IPv6 extension-header chains; ICMP errors quoting anything;
      VLAN tags, stacked. Mostly from SRC4/SRC6 (so that they pass the sender checks
      and reach the NAT) to DST4/DST6 or random addresses, some spoofed. Prints
      "sent N".
  fuzz.py check PCAP NET4 NET6
      Reads a capture and prints "frames N leaks L"; then one line per leak (a frame
      whose IPv4 or IPv6 source is in NET4 or NET6, behind any VLAN tags).
"""
import ipaddress
import random
import socket
import struct
import sys

ETH_IP, ETH_IP6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8


def generators(src4, src6, dst4, dst6, rnd):
    from scapy.all import (GRE, ICMP, IP, SCTP, TCP, UDP, IPv6, IPv6ExtHdrDestOpt,
                           IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                           IPv6ExtHdrRouting, Raw, fuzz, raw)
    from scapy.layers.inet6 import ICMPv6Unknown

    def junk(lo=0, hi=64):
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(lo, hi)))

    def a4():
        r = rnd.random()
        if r < 0.75:
            return src4, dst4
        if r < 0.9:
            return src4, str(ipaddress.IPv4Address(rnd.getrandbits(32)))
        return str(ipaddress.IPv4Address(rnd.getrandbits(32))), dst4

    def a6():
        r = rnd.random()
        if r < 0.75:
            return src6, dst6
        if r < 0.9:
            return src6, str(ipaddress.IPv6Address(rnd.getrandbits(128)))
        return str(ipaddress.IPv6Address(rnd.getrandbits(128))), dst6

    def l4():
        return rnd.choice([TCP(), UDP(), ICMP(), SCTP(), GRE()])

    def v4_fuzzed():
        s, d = a4()
        return ETH_IP, raw(fuzz(IP(src=s, dst=d) / l4() / Raw(junk())))

    def v4_any_proto():
        s, d = a4()
        return ETH_IP, raw(IP(src=s, dst=d, proto=rnd.randint(0, 255)) / Raw(junk()))

    def v4_cut():
        s, d = a4()
        b = raw(IP(src=s, dst=d) / l4() / Raw(junk(8, 80)))
        return ETH_IP, b[: rnd.randint(20, len(b))]

    def v4_fragment():
        s, d = a4()
        p = IP(src=s, dst=d, id=rnd.getrandbits(16), flags=rnd.choice([0, 1, 2, 3]),
               frag=rnd.choice([0, 0, rnd.getrandbits(13)]))
        return ETH_IP, raw(p / l4() / Raw(junk(0, 200)))

    def v4_header():
        s, d = a4()
        b = bytearray(raw(IP(src=s, dst=d) / UDP(dport=rnd.getrandbits(16)) / Raw(junk())))
        b[0] = (b[0] & 0xF0) | rnd.randint(0, 15) if rnd.random() < 0.5 else rnd.getrandbits(8)
        b[2:4] = struct.pack("!H", rnd.getrandbits(16))
        return ETH_IP, bytes(b)

    def v4_icmp_error():
        s, d = a4()
        inner = raw(IP(src=d, dst=s) / l4() / Raw(junk(0, 16)))
        icmp = ICMP(type=rnd.choice([3, 4, 5, 11, 12, rnd.randint(0, 255)]),
                    code=rnd.randint(0, 15))
        return ETH_IP, raw(IP(src=s, dst=d) / icmp / Raw(inner[: rnd.randint(0, len(inner))]))

    def v6_fuzzed():
        s, d = a6()
        up = rnd.choice([TCP(), UDP(), ICMPv6Unknown(type=rnd.randint(0, 255)), SCTP()])
        return ETH_IP6, raw(fuzz(IPv6(src=s, dst=d) / up / Raw(junk())))

    def v6_chain():
        s, d = a6()
        p = IPv6(src=s, dst=d)
        for _ in range(rnd.randint(1, 7)):
            p = p / rnd.choice([IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(),
                                IPv6ExtHdrDestOpt(),
                                IPv6ExtHdrFragment(offset=rnd.choice([0, rnd.getrandbits(13)]),
                                                   m=rnd.getrandbits(1),
                                                   id=rnd.getrandbits(32))])
        p = p / rnd.choice([TCP(), UDP(), Raw(junk())])
        b = raw(p)
        if rnd.random() < 0.3:
            b = b[: rnd.randint(40, len(b))]
        return ETH_IP6, b

    def v6_any():
        s, d = a6()
        b = raw(IPv6(src=s, dst=d, nh=rnd.randint(0, 255)) / Raw(junk()))
        if rnd.random() < 0.3:
            b = bytearray(b)
            b[4:6] = struct.pack("!H", rnd.getrandbits(16))
            b = bytes(b)
        return ETH_IP6, b

    def stacked_vlan():
        ethertype, inner = rnd.choice([v4_cut, v4_fuzzed, v6_fuzzed])()
        tags = b"".join(struct.pack("!HH", 0, ETH_VLAN) for _ in range(rnd.randint(1, 2)))
        return ETH_VLAN, tags[:-2] + struct.pack("!H", ethertype) + inner

    return [v4_fuzzed, v4_any_proto, v4_cut, v4_fragment, v4_header, v4_icmp_error,
            v6_fuzzed, v6_chain, v6_any, stacked_vlan]


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def send(iface, srcmac, dstmac, src4, src6, dst4, dst6, count, seed):
    rnd = random.Random(int(seed))
    gens = generators(src4, src6, dst4, dst6, rnd)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    head = mac(dstmac) + mac(srcmac)
    sent = 0
    for _ in range(int(count)):
        try:
            ethertype, body = rnd.choice(gens)()
            sock.send(head + struct.pack("!H", ethertype) + body)
            sent += 1
        except (OSError, ValueError, struct.error):
            # A frame the link or scapy refused (too long, a field out of range).
            continue
    print(f"sent {sent}")


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        yield data[off + 16:off + 16 + incl]
        off += 16 + incl


def source(frame):
    """The IPv4 or IPv6 source of an Ethernet frame, behind any VLAN tags."""
    off, ethertype = 12, None
    while off + 2 <= len(frame):
        ethertype = struct.unpack("!H", frame[off:off + 2])[0]
        if ethertype in (ETH_VLAN, ETH_QINQ):
            off += 4
            continue
        break
    ip = frame[off + 2:]
    if ethertype == ETH_IP and len(ip) >= 16:
        return ipaddress.IPv4Address(ip[12:16])
    if ethertype == ETH_IP6 and len(ip) >= 24:
        return ipaddress.IPv6Address(ip[8:24])
    return None


def check(pcap, net4, net6):
    nets = [ipaddress.ip_network(net4), ipaddress.ip_network(net6)]
    leaks, n = [], 0
    for frame in frames(pcap):
        n += 1
        src = source(frame)
        if src is not None and any(src.version == net.version and src in net for net in nets):
            leaks.append(frame)
    print(f"frames {n} leaks {len(leaks)}")
    for frame in leaks[:20]:
        print(frame[:64].hex())


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "send":
        send(*a[1:10])
    elif a[0] == "check":
        check(*a[1:4])
