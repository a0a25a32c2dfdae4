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
