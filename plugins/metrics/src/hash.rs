//! FNV-1a: deterministic ids and a seedless hasher for the plugin's maps. The std
//! `HashMap` default seeds itself from OS randomness, which the sandbox does not offer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(OFFSET)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
}

/// A `HashMap` with the FNV hasher.
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// FNV-1a over `parts`, each followed by a 0xff separator (so part boundaries count).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv::default();
    for part in parts {
        h.write(part);
        h.write(&[0xff]);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable() {
        // Pinned: alert ids must not change between releases or platforms.
        assert_eq!(super::fnv1a(&[b"a"]), 0x089b_c907_b544_c769);
        assert_ne!(super::fnv1a(&[b"ab", b"c"]), super::fnv1a(&[b"a", b"bc"]));
    }
}
