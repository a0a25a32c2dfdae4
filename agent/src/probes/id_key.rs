//! The packet-id key: 128 bits shared by every agent of a deployment
//! (config `packet_id.key`), written into each eBPF object's `vnt_id_key`
//! global (`ebpf/include/vnt/common.h`) before load, and the keyed hash the
//! kernel computes with it (SipHash-1-3), mirrored here for tests.
//!
//! Why keyed: see `docs/adr/011-keyed-packet-id.md`.

use std::fmt;

/// Name of the global in every packet plugin's object.
pub const ID_KEY_GLOBAL: &str = "vnt_id_key";

/// The built-in key, `vnt-default-key!` in ASCII. Public, so ids made with it
/// are predictable: the agent warns when it is used.
pub const DEFAULT_ID_KEY_HEX: &str = "766e742d64656661756c742d6b657921";

/// Mirror of `struct vnt_id_key`: the 16 key bytes as two little-endian
/// words (SipHash's convention).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdKey {
    k0: u64,
    k1: u64,
}

const _: () = assert!(std::mem::size_of::<IdKey>() == 16);

// SAFETY: `IdKey` is `repr(C)`, `Copy`, two `u64`s, no padding.
unsafe impl aya::Pod for IdKey {}

/// Never prints the key itself: it is a secret of the deployment.
impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            f.write_str("IdKey(default)")
        } else {
            f.write_str("IdKey(..)")
        }
    }
}

impl Default for IdKey {
    fn default() -> Self {
        IdKey::from_hex(DEFAULT_ID_KEY_HEX).expect("the default key is valid hex")
    }
}

impl IdKey {
    /// From 32 hex digits (16 bytes, in order).
    pub fn from_hex(s: &str) -> Result<IdKey, String> {
        let s = s.trim();
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "must be 32 hex digits (128 bits), got {} characters{}; generate one with \
                 `openssl rand -hex 16` and give every agent of the deployment the same",
                s.len(),
                if s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ""
                } else {
                    " with non-hex ones"
                }
            ));
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(IdKey::from_bytes(bytes))
    }

    /// From 16 key bytes.
    pub fn from_bytes(b: [u8; 16]) -> IdKey {
        let (lo, hi) = b.split_at(8);
        IdKey {
            k0: u64::from_le_bytes(lo.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(hi.try_into().expect("8 bytes")),
        }
    }

    /// Whether this is the built-in, public key.
    pub fn is_default(&self) -> bool {
        *self == IdKey::from_hex(DEFAULT_ID_KEY_HEX).expect("valid")
    }

    /// SipHash-1-3 of `msg` (whole 64-bit little-endian words) under this
    /// key: what `vnt_pkt_hash` computes over `struct vnt_pkt_key`.
    pub fn siphash13(&self, msg: &[u8]) -> u64 {
        let mut v0 = self.k0 ^ 0x736f_6d65_7073_6575;
        let mut v1 = self.k1 ^ 0x646f_7261_6e64_6f6d;
        let mut v2 = self.k0 ^ 0x6c79_6765_6e65_7261;
        let mut v3 = self.k1 ^ 0x7465_6462_7974_6573;
        let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
            *v0 = v0.wrapping_add(*v1);
            *v1 = v1.rotate_left(13) ^ *v0;
            *v0 = v0.rotate_left(32);
            *v2 = v2.wrapping_add(*v3);
            *v3 = v3.rotate_left(16) ^ *v2;
            *v0 = v0.wrapping_add(*v3);
            *v3 = v3.rotate_left(21) ^ *v0;
            *v2 = v2.wrapping_add(*v1);
            *v1 = v1.rotate_left(17) ^ *v2;
            *v2 = v2.rotate_left(32);
        };
        let chunks = msg.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            let m = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            v3 ^= m;
            round(&mut v0, &mut v1, &mut v2, &mut v3);
            v0 ^= m;
        }
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        let b = u64::from_le_bytes(last) | ((msg.len() as u64 & 0xff) << 56);
        v3 ^= b;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= b;
        v2 ^= 0xff;
        for _ in 0..3 {
            round(&mut v0, &mut v1, &mut v2, &mut v3);
        }
        v0 ^ v1 ^ v2 ^ v3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    /// The Rust standard library's `DefaultHasher::new()` is SipHash-1-3
    /// with a zero key (an implementation detail, stable for years): the
    /// mirror must agree with it on 80-byte messages, the size of
    /// `struct vnt_pkt_key`, and on a tail that is not a whole word.
    #[test]
    fn mirror_is_siphash_1_3() {
        for len in [80usize, 0, 7, 13] {
            let msg: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(&msg);
            assert_eq!(
                IdKey::from_bytes([0; 16]).siphash13(&msg),
                h.finish(),
                "len {len}"
            );
        }
    }

    #[test]
    fn hex_key_round_trip_and_errors() {
        let k = IdKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(k.k0, 0x0706_0504_0302_0100);
        assert_eq!(k.k1, 0x0f0e_0d0c_0b0a_0908);
        assert!(IdKey::from_hex("00").is_err());
        assert!(IdKey::from_hex(&"zz".repeat(16)).is_err());
        assert!(IdKey::default().is_default());
        assert!(!k.is_default());
        assert_eq!(format!("{k:?}"), "IdKey(..)", "the key is never printed");
    }

    #[test]
    fn the_key_changes_every_id() {
        let msg = [7u8; 80];
        let a = IdKey::from_hex(&"11".repeat(16)).unwrap();
        let b = IdKey::from_hex(&"12".repeat(16)).unwrap();
        assert_ne!(a.siphash13(&msg), b.siphash13(&msg));
    }
}
