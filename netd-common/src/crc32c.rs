//! SCTP's checksum is a CRC32c of the whole SCTP packet, ports included, so a NAT that
//! changes a port must change it. The kernel's NAT recomputes it over the packet
//! (`sctp_manip_pkt`); eBPF cannot read a whole packet cheaply, but a CRC is linear:
//! for two messages of the same length, crc(a) ^ crc(b) is the CRC (without initial
//! value or final inversion) of a ^ b. Changing the first four bytes of an `len`-byte
//! packet by `d` therefore changes its CRC by d * x^(8 * len) modulo the polynomial,
//! whatever the other bytes are: a few dozen shifts, however long the packet
//! (the combination zlib's crc32_combine uses).
//!
//! Values are in the reflected convention of the CRC register (bit 31 is x^0), and SCTP
//! carries the CRC as a little-endian word: read the four checksum bytes and the four
//! port bytes as little-endian u32s and the arithmetic below applies to them directly.

/// The Castagnoli polynomial, reflected.
const POLY: u32 = 0x82f6_3b78;

/// All ones if bit 0 of `x` is set, else 0.
#[inline(always)]
const fn mask(x: u32) -> u32 {
    0u32.wrapping_sub(x & 1)
}

/// One round of `mul` per literal: the eBPF verifier walks straight-line code once,
/// where a loop would be walked round by round with its counter tracked precisely (and
/// a loop of loops took it minutes). No branch either: a mask instead of an `if`.
macro_rules! rounds {
    ($a:expr, $b:expr; $($k:literal)+) => {{
        let (a, mut b, mut p) = ($a, $b, 0u32);
        $(
            // Bit 31 - k of `a` is x^k's coefficient.
            p ^= b & mask(a >> (31 - $k));
            b = (b >> 1) ^ (POLY & mask(b));
        )+
        let _ = b;
        p
    }};
}

/// a * b modulo the polynomial (the tables' arithmetic, at compile time).
const fn mul_const(a: u32, b: u32) -> u32 {
    rounds!(a, b; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31)
}

/// 0 and all ones, read from memory at run time: a mask the eBPF verifier knows
/// nothing about. Computed in place (0 - bit), it derived wrong constants from it and
/// spent its whole instruction budget on a few dozen rounds.
static MASKS: [u32; 2] = [0, u32::MAX];

#[inline(always)]
fn mask_rt(x: u32) -> u32 {
    // SAFETY: an in-bounds read (index 0 or 1) of a static.
    unsafe { core::ptr::read_volatile(MASKS.as_ptr().add((x & 1) as usize)) }
}

/// a * b modulo the polynomial, at run time.
#[inline(always)]
pub fn mul(a: u32, b: u32) -> u32 {
    let (mut b, mut p) = (b, 0u32);
    macro_rules! r {
        ($($k:literal)+) => {$(
            p ^= b & mask_rt(a >> (31 - $k));
            b = (b >> 1) ^ (POLY & mask_rt(b));
        )+};
    }
    r!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    p
}

/// x^(8 * i * step) for i = 0..256: the powers `delta` multiplies by.
const fn powers(step: u32) -> [u32; 256] {
    // x^(8 * step), by squaring x^8 as often as step has factors of two (step is one).
    let mut unit: u32 = X8;
    let mut s = step;
    while s > 1 {
        unit = mul_const(unit, unit);
        s >>= 1;
    }
    let mut t = [0u32; 256];
    // x^0: bit 31 in the reflected convention.
    t[0] = 1 << 31;
    let mut i = 1;
    while i < 256 {
        t[i] = mul_const(t[i - 1], unit);
        i += 1;
    }
    t
}

/// x^8: bit 31 - 8.
const X8: u32 = 1 << 23;

/// x^(8 * i) and x^(8 * 256 * i), for i = 0..256 (2 KiB of read-only data).
pub const LOW: [u32; 256] = powers(1);
pub const HIGH: [u32; 256] = powers(256);

/// How the CRC of a `len`-byte packet (`len` < 2^16: an IP packet's length field
/// bounds it) changes when its first four bytes change by `d` (old ^ new, read
/// little-endian): XOR the result into the checksum field. Two multiplications:
/// d * x^(8 * len), with len split into its two bytes.
#[inline(always)]
pub fn delta(d: u32, len: u32) -> u32 {
    let lo = LOW[(len & 0xff) as usize];
    let hi = HIGH[((len >> 8) & 0xff) as usize];
    mul(mul(d, lo), hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC32c of `data` the plain way, bit by bit (as SCTP computes it, final
    /// inversion included).
    fn crc32c(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn the_reference_crc_is_crc32c() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn a_port_change_moves_the_crc_by_delta_at_every_length() {
        let mut seed = 0x1234_5678u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [12usize, 13, 16, 60, 1000, 1480, 4096, 65_000, 65_535] {
            let mut pkt: std::vec::Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // The checksum field (bytes 8..12) counts as zero, as SCTP computes it.
            pkt[8..12].fill(0);
            let before = crc32c(&pkt);
            let old = u32::from_le_bytes(pkt[0..4].try_into().unwrap());
            let new = next();
            pkt[0..4].copy_from_slice(&new.to_le_bytes());
            let after = crc32c(&pkt);
            assert_eq!(before ^ delta(old ^ new, len as u32), after, "len {len}");
        }
    }
}
