//! Trace and span ids derived from the packet id, so every agent that sees a
//! packet puts its spans in the same trace without talking to the others.
//! See docs/adr/002-packet-identity-and-sampling.md.

/// splitmix64: a bijective mix, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 128-bit trace id of a packet's journey (never all zero).
pub fn trace_id(pkt_id: u64) -> [u8; 16] {
    let hi = mix(pkt_id ^ 0x7674_6e2d_7472_6163); // "vnt-trac"
    let mut lo = mix(pkt_id);
    if hi == 0 && lo == 0 {
        lo = 1;
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi.to_be_bytes());
    out[8..].copy_from_slice(&lo.to_be_bytes());
    out
}

/// FNV-1a over bytes: a stable 64-bit key for a host identity (its
/// `host.name` and `host.id`), the same in every agent version.
pub fn host_key(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The span id of a journey's root span on one host: from the packet id, the
/// host's key and the journey's first timestamp, so that two hosts (and two
/// journeys of identical packets on one host) never share a root span id
/// while staying in the packet's trace. Never zero.
pub fn root_span_id(pkt_id: u64, host: u64, start_unix_ns: u64) -> [u8; 8] {
    let id = mix(mix(pkt_id ^ 0x726f_6f74_7370_616e) ^ host).wrapping_add(mix(start_unix_ns)); // "rootspan"
    nonzero(id).to_be_bytes()
}

/// The span id of the `index`-th span under `root` (hops from 1). Never zero.
pub fn child_span_id(root: [u8; 8], index: u32) -> [u8; 8] {
    let r = u64::from_be_bytes(root);
    nonzero(mix(r ^ mix(u64::from(index) ^ 0x686f_7073))).to_be_bytes() // "hops"
}

fn nonzero(id: u64) -> u64 {
    if id == 0 {
        1
    } else {
        id
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_stable_and_distinct() {
        assert_eq!(trace_id(42), trace_id(42));
        assert_ne!(trace_id(42), trace_id(43));
        assert_eq!(hex(&trace_id(0)).len(), 32);
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&7u64.to_be_bytes()), format!("{:016x}", 7));
        assert_ne!(trace_id(0), [0u8; 16]);
        // Pinned: agents of different versions must agree on the same packet.
        assert_eq!(
            hex(&trace_id(1)),
            format!("{:016x}{:016x}", mix(1 ^ 0x7674_6e2d_7472_6163), mix(1))
        );
    }

    #[test]
    fn span_ids_differ_by_host_journey_and_hop() {
        let (a, b) = (host_key(&["node-a", "m1"]), host_key(&["node-b", "m1"]));
        assert_ne!(a, b);
        assert_eq!(a, host_key(&["node-a", "m1"]));
        // the separator keeps ("ab","c") and ("a","bc") apart
        assert_ne!(host_key(&["ab", "c"]), host_key(&["a", "bc"]));
        let ra = root_span_id(7, a, 1000);
        assert_eq!(ra, root_span_id(7, a, 1000));
        assert_ne!(ra, root_span_id(7, b, 1000), "two hosts, one packet");
        assert_ne!(
            ra,
            root_span_id(7, a, 2000),
            "a repeat of the packet on one host"
        );
        assert_ne!(ra, root_span_id(8, a, 1000));
        let hops: std::collections::HashSet<[u8; 8]> =
            (1..100).map(|i| child_span_id(ra, i)).collect();
        assert_eq!(hops.len(), 99);
        assert!(!hops.contains(&ra));
        assert!(hops.iter().all(|h| *h != [0u8; 8]));
        assert_ne!(
            child_span_id(ra, 1),
            child_span_id(root_span_id(7, b, 1000), 1)
        );
    }
}
