//! A stable 64-bit key hash (FNV-1a): the same bytes give the same key on every run and
//! platform, with no seed (the sandbox has no randomness) and no dependency.
//!
//! Every field is written with a type tag and a length, so `("ab","c")` and `("a","bc")`
//! hash differently.

use sluice_plugin_sdk::ValueRef;

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(OFFSET)
    }
}

impl KeyHasher {
    pub fn bytes(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        self.0 = h;
    }

    fn tagged(&mut self, tag: u8, bytes: &[u8]) {
        self.bytes(&[tag]);
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    pub fn str(&mut self, s: &str) {
        self.tagged(b's', s.as_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.tagged(b'i', &v.to_le_bytes());
    }

    pub fn value(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => self.tagged(b'n', &[]),
            ValueRef::Bool(b) => self.tagged(b'b', &[u8::from(b)]),
            ValueRef::Int(i) => self.i64(i),
            ValueRef::Float(f) => self.tagged(b'f', &f.to_bits().to_le_bytes()),
            ValueRef::Str(s) => self.str(s),
            ValueRef::Bytes(b) => self.tagged(b'y', b),
        }
    }

    /// A field that is absent (distinct from any value).
    pub fn absent(&mut self) {
        self.tagged(b'-', &[]);
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_unambiguous() {
        // Pinned: a change here changes every key (harmless, but should be deliberate).
        let mut h = KeyHasher::default();
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
        let key = |a: &str, b: &str| {
            let mut h = KeyHasher::default();
            h.str(a);
            h.str(b);
            h.finish()
        };
        assert_ne!(key("ab", "c"), key("a", "bc"));
        let mut int = KeyHasher::default();
        int.value(ValueRef::Int(1));
        let mut text = KeyHasher::default();
        text.value(ValueRef::Str("1"));
        assert_ne!(int.finish(), text.finish());
    }
}
