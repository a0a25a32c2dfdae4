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

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_stable_and_distinct() {
        assert_eq!(trace_id(42), trace_id(42));
        assert_ne!(trace_id(42), trace_id(43));
        assert_eq!(hex(&trace_id(0)).len(), 32);
        assert_ne!(trace_id(0), [0u8; 16]);
        // Pinned: agents of different versions must agree on the same packet.
        assert_eq!(
            hex(&trace_id(1)),
            format!("{:016x}{:016x}", mix(1 ^ 0x7674_6e2d_7472_6163), mix(1))
        );
    }
}
