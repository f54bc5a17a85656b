//! Frames for the fixtures: built with valid checksums, and read back after checking
//! every checksum they carry.
pub fn csum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Clone)]
pub struct Pkt {
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// Extra IPv4 option bytes (multiple of 4).
    pub options: Vec<u8>,
    pub frag: u16,
    pub udp_zero_csum: bool,
    /// Payload bytes beyond the standard ones.
    pub extra: usize,
}

impl Pkt {
    pub fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: 6,
            src,
            dst,
            sport,
            dport,
            options: vec![],
            frag: 0,
            udp_zero_csum: false,
            extra: 0,
        }
    }
    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: 17,
            ..Pkt::tcp(src, sport, dst, dport)
        }
    }
    /// ICMP echo request (dport = 8) or reply (dport = 0) with id `id`.
    pub fn icmp(src: [u8; 4], dst: [u8; 4], id: u16, ty: u16) -> Pkt {
        Pkt {
            proto: 1,
            ..Pkt::tcp(src, id, dst, ty)
        }
    }

    /// An SCTP packet (an INIT chunk) with a valid CRC32c.
    pub fn sctp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: 132,
            ..Pkt::tcp(src, sport, dst, dport)
        }
    }

    /// A packet of protocol `proto` with no ports netd knows (GRE, ESP, ...).
    pub fn other(src: [u8; 4], dst: [u8; 4], proto: u8) -> Pkt {
        Pkt {
            proto,
            ..Pkt::tcp(src, 0, dst, 0)
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut payload = b"netd fixture payload".to_vec();
        payload.resize(payload.len() + self.extra, b'.');
        let payload = payload.as_slice();
        if self.proto == 132 {
            return self.frame(sctp_packet(self.sport, self.dport, payload));
        }
        if ![1, 6, 17].contains(&self.proto) {
            // GRE's 4-byte header (no checksum, IPv4 inside) or ESP's SPI and
            // sequence number, then opaque bytes.
            let mut l4 = vec![0, 0, 0x08, 0x00, 0, 0, 0, 7];
            l4.extend_from_slice(payload);
            return self.frame(l4);
        }
        let mut l4 = Vec::new();
        if self.proto == 1 {
            l4.extend_from_slice(&[self.dport as u8, 0, 0, 0]);
            l4.extend_from_slice(&self.sport.to_be_bytes());
            l4.extend_from_slice(&[0, 1]); // sequence
            l4.extend_from_slice(payload);
            let c = csum(&l4, 0);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            return self.frame(l4);
        }
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            l4.extend_from_slice(&1234u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.extend_from_slice(&[0x50, 0x02]); // doff 5, SYN
            l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, csum, urg
        } else {
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        let csum_off = if self.proto == 6 { 16 } else { 6 };
        if !(self.proto == 17 && self.udp_zero_csum) {
            let c = l4_csum(self.src, self.dst, self.proto, &l4);
            l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
        }
        self.frame(l4)
    }

    pub fn frame(&self, l4: Vec<u8>) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let c = csum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![0xaa; 6];
        f.extend_from_slice(&[0xbb; 6]);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(ip);
        f.extend(l4);
        f
    }
}

/// An SCTP packet: ports, a verification tag, the CRC32c, an INIT-like chunk carrying
/// `payload`.
pub fn sctp_packet(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // vtag 0 (INIT), CRC
    let len = 4 + payload.len();
    l4.extend_from_slice(&[1, 0]);
    l4.extend_from_slice(&(len as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    while l4.len() % 4 != 0 {
        l4.push(0);
    }
    let c = crc32c(&l4);
    l4[8..12].copy_from_slice(&c.to_le_bytes());
    l4
}

/// SCTP's CRC32c of `data` (the checksum field counts as zero), bit by bit.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for (i, &b) in data.iter().enumerate() {
        let b = if (8..12).contains(&i) { 0 } else { b };
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Whether an SCTP packet's CRC32c is right.
pub fn sctp_crc_ok(l4: &[u8]) -> bool {
    u32::from_le_bytes(l4[8..12].try_into().unwrap()) == crc32c(l4)
}

/// `p` cut into two IPv4 fragments after `first` bytes (a multiple of 8) of its IP
/// payload: the first with more-fragments set, the second at offset `first`.
pub fn fragments(p: &Pkt, first: usize) -> (Vec<u8>, Vec<u8>) {
    let whole = p.build();
    let ihl = ((whole[14] & 0xf) * 4) as usize;
    let payload = &whole[14 + ihl..];
    let piece = |data: &[u8], frag: u16| {
        let mut q = p.clone();
        q.frag = frag;
        q.frame(data.to_vec())
    };
    (
        piece(&payload[..first], 0x2000),
        piece(&payload[first..], (first / 8) as u16),
    )
}

/// The datagram two IPv4 fragments make, as one frame (the header of the first, its
/// lengths and checksum made whole), after checking both headers' checksums and that
/// the two carry the same addresses, protocol and id.
pub fn reassemble(first: &[u8], second: &[u8]) -> Vec<u8> {
    for f in [first, second] {
        assert_eq!(csum(&f[14..34], 0), 0, "fragment IP checksum invalid");
    }
    assert_eq!(&first[18..20], &second[18..20], "ids differ");
    assert_eq!(first[23], second[23], "protocols differ");
    assert_eq!(&first[26..34], &second[26..34], "addresses differ");
    let offset = (u16::from_be_bytes([second[20], second[21]]) & 0x1fff) as usize * 8;
    let ihl = ((first[14] & 0xf) * 4) as usize;
    let mut whole = first[..14 + ihl + offset].to_vec();
    whole.extend_from_slice(&second[14 + ihl..]);
    let tot = (whole.len() - 14) as u16;
    whole[16..18].copy_from_slice(&tot.to_be_bytes());
    whole[20..22].copy_from_slice(&[0, 0]);
    whole[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&whole[14..14 + ihl], 0);
    whole[24..26].copy_from_slice(&c.to_be_bytes());
    whole
}

pub fn l4_csum(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    csum(&pseudo, 0)
}

/// What a frame says, after checking both checksums are valid.
#[derive(Debug, PartialEq)]
pub struct Seen {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub l4_csum: u16,
}

pub fn inspect(frame: &[u8]) -> Seen {
    let ip = &frame[14..];
    let ihl = ((ip[0] & 0xf) * 4) as usize;
    assert_eq!(csum(&ip[..ihl], 0), 0, "IP header checksum invalid");
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4 = &ip[ihl..tot];
    let proto = ip[9];
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    if proto == 1 {
        assert_eq!(csum(l4, 0), 0, "ICMP checksum invalid");
        let id = u16::from_be_bytes([l4[4], l4[5]]);
        return Seen {
            src,
            dst,
            sport: id,
            dport: id,
            l4_csum: u16::from_be_bytes([l4[2], l4[3]]),
        };
    }
    if proto == 132 {
        assert!(sctp_crc_ok(l4), "SCTP CRC32c invalid");
    }
    if ![6, 17].contains(&proto) {
        let port = |o: usize| {
            if proto == 132 {
                u16::from_be_bytes([l4[o], l4[o + 1]])
            } else {
                0
            }
        };
        return Seen {
            src,
            dst,
            sport: port(0),
            dport: port(2),
            l4_csum: 0,
        };
    }
    let csum_off = if proto == 6 { 16 } else { 6 };
    let l4c = u16::from_be_bytes([l4[csum_off], l4[csum_off + 1]]);
    if !(proto == 17 && l4c == 0) {
        assert_eq!(l4_csum(src, dst, proto, l4), 0, "L4 checksum invalid");
    }
    Seen {
        src,
        dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l4_csum: l4c,
    }
}

pub fn in_snat_range(port: u16, range: (u16, u16)) -> bool {
    (range.0..=range.1).contains(&port)
}

/// An ICMP error (type, code) from `src` to `dst` quoting the first 28 bytes of the IP
/// packet in `quoted` (an Ethernet frame).
pub fn icmp_error(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0x05, 0x78]; // next-hop MTU 1400
    icmp.extend_from_slice(&quoted[14..14 + 28]);
    let c = csum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let p = Pkt::icmp(src, dst, 0, 0);
    p.frame(icmp)
}

/// (outer src, outer dst, quoted src, quoted sport, quoted dst, quoted dport), after
/// checking the outer IP, ICMP and quoted IP checksums.
pub fn inspect_error(frame: &[u8]) -> ([u8; 4], [u8; 4], [u8; 4], u16, [u8; 4], u16) {
    let ip = &frame[14..];
    assert_eq!(csum(&ip[..20], 0), 0, "outer IP checksum invalid");
    let icmp = &ip[20..];
    assert_eq!(csum(icmp, 0), 0, "ICMP checksum invalid");
    let q = &icmp[8..];
    assert_eq!(csum(&q[..20], 0), 0, "quoted IP checksum invalid");
    let a = |b: &[u8]| -> [u8; 4] { b.try_into().unwrap() };
    (
        a(&ip[12..16]),
        a(&ip[16..20]),
        a(&q[12..16]),
        u16::from_be_bytes([q[20], q[21]]),
        a(&q[16..20]),
        u16::from_be_bytes([q[22], q[23]]),
    )
}
