//! Crafted packets: Ethernet frames with IPv4/IPv6, extension headers,
//! fragments, truncated transport headers and trailing bytes, built byte by
//! byte for [`crate::Traffic::raw_send`]. The kernel's own stack never sends
//! most of these; a hostile or broken sender does.

use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol numbers used here.
pub mod proto {
    pub const HOPOPTS: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const FRAGMENT: u8 = 44;
    pub const DSTOPTS: u8 = 60;
}

/// A MAC address from `aa:bb:cc:dd:ee:ff`.
///
/// # Panics
/// When `s` is not six hex bytes separated by colons.
pub fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte in a MAC address"))
        .collect();
    v.try_into().expect("six bytes in a MAC address")
}

/// The Ethernet header's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Eth {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

impl Eth {
    fn header(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }
}

/// A UDP header (checksum 0) followed by `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A 20-byte TCP header (ACK, no options) followed by `payload`.
pub fn tcp(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&[5 << 4, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// `n` bytes repeating the big-endian `port`: bytes that read as that port
/// wherever a parser looks into them.
pub fn port_bytes(port: u16, n: usize) -> Vec<u8> {
    port.to_be_bytes().iter().copied().cycle().take(n).collect()
}

/// An IPv4 packet. `body` is everything after the IP header (transport
/// header and payload, or a fragment's bytes); `trailer` follows the
/// datagram inside the frame (link-layer padding, or garbage).
#[derive(Debug, Clone)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ident: u16,
    /// Flags and fragment offset word: `0x2000` = more fragments, low 13
    /// bits = offset in 8-byte units.
    pub frag: u16,
    pub body: Vec<u8>,
    /// Total length written in the header; `None`: the real one.
    pub total_len: Option<u16>,
    pub trailer: Vec<u8>,
}

impl Ipv4 {
    /// A whole, unfragmented packet.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ident: u16, body: Vec<u8>) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            proto,
            ident,
            frag: 0,
            body,
            total_len: None,
            trailer: Vec::new(),
        }
    }

    /// The Ethernet frame.
    pub fn frame(&self, eth: &Eth) -> Vec<u8> {
        let mut f = eth.header(0x0800);
        let tot = self.total_len.unwrap_or(20 + self.body.len() as u16);
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&tot.to_be_bytes());
        h.extend_from_slice(&self.ident.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[64, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&h);
        f.extend_from_slice(&self.body);
        f.extend_from_slice(&self.trailer);
        f
    }
}

/// An IPv6 packet: `ext` (extension headers, already chained: see
/// [`ext_opts`] and [`ext_frag`]) then `body`; `next` is the first next
/// header.
#[derive(Debug, Clone)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next: u8,
    pub ext: Vec<u8>,
    pub body: Vec<u8>,
    /// Payload length written in the header; `None`: the real one.
    pub payload_len: Option<u16>,
    pub trailer: Vec<u8>,
}

impl Ipv6 {
    /// A packet without extension headers.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next: u8, body: Vec<u8>) -> Ipv6 {
        Ipv6 {
            src,
            dst,
            next,
            ext: Vec::new(),
            body,
            payload_len: None,
            trailer: Vec::new(),
        }
    }

    /// The Ethernet frame.
    pub fn frame(&self, eth: &Eth) -> Vec<u8> {
        let mut f = eth.header(0x86dd);
        let plen = self
            .payload_len
            .unwrap_or((self.ext.len() + self.body.len()) as u16);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[self.next, 64]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&self.ext);
        f.extend_from_slice(&self.body);
        f.extend_from_slice(&self.trailer);
        f
    }
}

/// A hop-by-hop or destination options header of `8 * (1 + units)` bytes
/// (PadN only), whose next header is `next`.
pub fn ext_opts(next: u8, units: u8) -> Vec<u8> {
    let len = 8 * (1 + units as usize);
    let mut h = vec![next, units, 1, (len - 4) as u8];
    h.resize(len, 0);
    h
}

/// An IPv6 fragment header: offset in 8-byte units, more-fragments flag,
/// identification.
pub fn ext_frag(next: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let word = (offset_units << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&word.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `struct vnt_pkt_key` (ebpf/include/vnt/event.h) of a whole IPv4 UDP
/// datagram, as the kernel side fills it: 80 bytes, little-endian fields.
pub fn udp4_identity(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ident: u16,
    payload: &[u8],
) -> [u8; 80] {
    let mut k = [0u8; 80];
    k[0..4].copy_from_slice(&src.octets());
    k[16..20].copy_from_slice(&dst.octets());
    k[32..34].copy_from_slice(&sport.to_le_bytes());
    k[34..36].copy_from_slice(&dport.to_le_bytes());
    k[36] = 4;
    k[37] = proto::UDP;
    k[40..44].copy_from_slice(&u32::from(ident).to_le_bytes());
    let udp_len = 8 + payload.len() as u32;
    k[44..48].copy_from_slice(&udp_len.to_le_bytes()); // l4_len
    k[48..52].copy_from_slice(&udp_len.to_le_bytes()); // w0: UDP length
    let n = payload.len().min(16);
    k[64..64 + n].copy_from_slice(&payload[..n]);
    k
}

fn words(k: &[u8; 80]) -> [u64; 10] {
    std::array::from_fn(|i| u64::from_le_bytes(k[8 * i..8 * i + 8].try_into().expect("8 bytes")))
}

const UNKEYED_MUL: u64 = 0xff51_afd7_ed55_8ccd;

fn unkeyed_rounds(w: &[u64]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for &x in w {
        h ^= x;
        h = h.wrapping_mul(UNKEYED_MUL);
        h ^= h >> 32;
    }
    h
}

fn mul_inverse(m: u64) -> u64 {
    let mut inv = m;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(inv)));
    }
    inv
}

fn unxorshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    for _ in 0..=(64 / s) {
        x = y ^ (x >> s);
    }
    x
}

/// The packet id before issue 13: an unkeyed multiply-xor over the ten
/// words of the identity, then the splitmix64 finaliser. Every step is
/// invertible, which is what made it steerable.
pub fn unkeyed_id(k: &[u8; 80]) -> u64 {
    let mut h = unkeyed_rounds(&words(k));
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h
}

/// Inverts [`unkeyed_id`] for the first 8 payload bytes: given every other
/// field of the identity `k` (its payload bytes 0..8 are ignored) and an
/// id, the payload bytes that give exactly that id. With an exported id this
/// reads a packet's first 8 payload bytes back; with a chosen id it makes a
/// packet that is sampled, or that collides with another.
pub fn unkeyed_payload_for(k: &[u8; 80], id: u64) -> [u8; 8] {
    let w = words(k);
    let mut h = unxorshift(id, 31);
    h = h.wrapping_mul(mul_inverse(0x94d0_49bb_1331_11eb));
    h = unxorshift(h, 27);
    h = h.wrapping_mul(mul_inverse(0xbf58_476d_1ce4_e5b9));
    h = unxorshift(h, 30);
    // Undo word 9, then word 8.
    let inv = mul_inverse(UNKEYED_MUL);
    h = unxorshift(h, 32).wrapping_mul(inv) ^ w[9];
    h = unxorshift(h, 32).wrapping_mul(inv);
    (h ^ unkeyed_rounds(&w[..8])).to_le_bytes()
}

/// SipHash-1-3 of `msg` under `key` (16 bytes): the keyed packet id
/// (`vnt_pkt_hash`, agent/src/probes/id_key.rs).
pub fn siphash13(key: &[u8; 16], msg: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    let chunks = msg.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let m = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    let b = u64::from_le_bytes(last) | ((msg.len() as u64 & 0xff) << 56);
    v[3] ^= b;
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..3 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = Ipv4::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            proto::UDP,
            7,
            udp(1, 2, b"x"),
        );
        let f = p.frame(&Eth {
            src: [0; 6],
            dst: [0; 6],
        });
        assert_eq!(checksum(&f[14..34]), 0);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 29);
    }

    #[test]
    fn unkeyed_id_inverts() {
        let src = Ipv4Addr::new(10, 1, 2, 1);
        let dst = Ipv4Addr::new(10, 1, 2, 2);
        let k = udp4_identity(src, dst, 1000, 2000, 77, b"secret!!");
        assert_eq!(unkeyed_payload_for(&k, unkeyed_id(&k)), *b"secret!!");
        let forced = unkeyed_payload_for(&k, 4200);
        let k2 = udp4_identity(src, dst, 1000, 2000, 77, &forced);
        assert_eq!(unkeyed_id(&k2), 4200);
    }

    #[test]
    fn siphash_mirror_matches_std() {
        use std::hash::Hasher;
        let msg = [9u8; 80];
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(&msg);
        assert_eq!(siphash13(&[0; 16], &msg), h.finish());
    }

    #[test]
    fn ipv6_extension_headers_chain() {
        let mut p = Ipv6::new(
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            proto::HOPOPTS,
            udp(1, 2, b""),
        );
        p.ext = [ext_opts(proto::DSTOPTS, 0), ext_opts(proto::UDP, 1)].concat();
        let f = p.frame(&Eth {
            src: [0; 6],
            dst: [0; 6],
        });
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 8 + 16 + 8);
        assert_eq!(f.len(), 14 + 40 + 24 + 8);
        assert_eq!(ext_frag(17, 4, false, 9)[2..4], [0, 32]);
    }
}
