//! Durable state per source partition (contract 0.2.0, `wit/README.md` "Durable state").
//!
//! A plugin opts in by implementing [`Stateful`] with a `Serialize + Deserialize` type for
//! one partition's state, and exporting with `export_plugin!(MyPlugin, state)`. The SDK
//! does the bytes: a snapshot is a short header (a magic and the format's version) and the
//! state in [postcard](https://docs.rs/postcard), a compact binary form of serde's data
//! model. A snapshot that does not read back — corrupt, cut short, or of another state
//! type — fails `restore` with an error, and the host starts that partition empty.
//!
//! Change the state type compatibly (or not at all) between versions of a plugin: a
//! snapshot written by the old version is restored into the new one.

use crate::{PackedPlugin, PluginError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A source partition: the topic and partition of records' origin, the unit state is kept
/// and moved by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePartition {
    pub topic: String,
    pub partition: i32,
}

impl SourcePartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        SourcePartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for SourcePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A plugin whose state survives restarts and moves with its partitions.
///
/// The host calls these between `process` calls, never during one: after committing a
/// partition's offsets (`snapshot`), when it starts consuming a partition (`restore`,
/// before any of its records) and when it stops (`release`).
pub trait Stateful: PackedPlugin {
    /// One partition's state, as stored.
    type State: Serialize + DeserializeOwned;

    /// The state held for `source`; `None` when there is nothing to keep (a partition
    /// never seen, or whose state is empty).
    fn snapshot(&self, source: &SourcePartition) -> Option<Self::State>;

    /// Replace the state held for `source` with `state`, from an earlier snapshot. An
    /// error (a state this configuration cannot use) makes the host start it empty.
    fn restore(&mut self, source: &SourcePartition, state: Self::State) -> Result<(), PluginError>;

    /// Drop the state held for `source`: another consumer has it now.
    fn release(&mut self, source: &SourcePartition);
}

/// What a snapshot starts with: "Sluice state", then the format's version.
const MAGIC: &[u8; 4] = b"SLST";
const FORMAT: u8 = 1;

/// A snapshot of `state`, as the host stores it.
pub fn encode<S: Serialize>(state: &S) -> Result<Vec<u8>, PluginError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(MAGIC);
    bytes.push(FORMAT);
    postcard::to_extend(state, bytes)
        .map_err(|e| PluginError::new(format!("cannot encode the state: {e}")))
}

/// The state in a snapshot [`encode`] wrote. Fails on anything else, naming `source`.
pub fn decode<S: DeserializeOwned>(
    source: &SourcePartition,
    bytes: &[u8],
) -> Result<S, PluginError> {
    let unreadable = |why: String| {
        PluginError::new(format!(
            "the state of {source} cannot be restored ({} bytes): {why}",
            bytes.len()
        ))
    };
    let payload = match bytes.split_at_checked(MAGIC.len() + 1) {
        Some((head, payload)) if head[..4] == *MAGIC && head[4] == FORMAT => payload,
        Some((head, _)) if head[..4] == *MAGIC => {
            return Err(unreadable(format!(
                "snapshot format {} is not {FORMAT}",
                head[4]
            )));
        }
        _ => return Err(unreadable("not a snapshot this SDK wrote".into())),
    };
    let (state, rest) =
        postcard::take_from_bytes(payload).map_err(|e| unreadable(format!("corrupt: {e}")))?;
    if !rest.is_empty() {
        return Err(unreadable(format!("{} trailing bytes", rest.len())));
    }
    Ok(state)
}

/// The calls of the `state` interface on a [`Stateful`] plugin, in bytes.
pub(crate) fn snapshot<P: Stateful>(
    plugin: &P,
    source: &SourcePartition,
) -> Result<Option<Vec<u8>>, PluginError> {
    plugin.snapshot(source).map(|s| encode(&s)).transpose()
}

pub(crate) fn restore<P: Stateful>(
    plugin: &mut P,
    source: &SourcePartition,
    bytes: &[u8],
) -> Result<(), PluginError> {
    let state = decode(source, bytes)?;
    plugin.restore(source, state)
}

/// State kept per source partition, with the last partition looked up remembered: batches
/// rarely mix partitions, so a lookup per record is one comparison, not a hash.
#[derive(Debug)]
pub struct Partitions<S> {
    states: Vec<(SourcePartition, S)>,
    index: HashMap<SourcePartition, usize, std::hash::BuildHasherDefault<Fnv>>,
    last: usize,
}

impl<S> Default for Partitions<S> {
    fn default() -> Self {
        Partitions {
            states: Vec::new(),
            index: HashMap::default(),
            last: 0,
        }
    }
}

impl<S> Partitions<S> {
    /// The state of (`topic`, `partition`), made with `new` the first time.
    pub fn get_or_insert_with(
        &mut self,
        topic: &str,
        partition: i32,
        new: impl FnOnce() -> S,
    ) -> &mut S {
        let hit = self
            .states
            .get(self.last)
            .is_some_and(|(p, _)| p.partition == partition && p.topic == topic);
        if !hit {
            let key = SourcePartition::new(topic, partition);
            self.last = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    self.states.push((key.clone(), new()));
                    self.index.insert(key, self.states.len() - 1);
                    self.states.len() - 1
                }
            };
        }
        &mut self.states[self.last].1
    }

    pub fn get(&self, source: &SourcePartition) -> Option<&S> {
        self.index.get(source).map(|&i| &self.states[i].1)
    }

    /// Set the state of `source`, replacing any.
    pub fn insert(&mut self, source: SourcePartition, state: S) {
        match self.index.get(&source) {
            Some(&i) => self.states[i].1 = state,
            None => {
                self.states.push((source.clone(), state));
                self.index.insert(source, self.states.len() - 1);
            }
        }
    }

    /// Remove the state of `source`.
    pub fn remove(&mut self, source: &SourcePartition) -> Option<S> {
        let i = self.index.remove(source)?;
        let (_, state) = self.states.swap_remove(i);
        if let Some((moved, _)) = self.states.get(i) {
            self.index.insert(moved.clone(), i);
        }
        self.last = 0;
        Some(state)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SourcePartition, &S)> {
        self.states.iter().map(|(p, s)| (p, s))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&SourcePartition, &mut S)> {
        self.states.iter_mut().map(|(p, s)| (&*p, s))
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// FNV-1a: seedless, so no OS randomness is imported in wasm.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_and_anything_else_is_refused() {
        let source = SourcePartition::new("logs", 3);
        let state = (7u64, vec![(1i64, "a".to_string())]);
        let bytes = encode(&state).unwrap();
        assert_eq!(
            decode::<(u64, Vec<(i64, String)>)>(&source, &bytes).unwrap(),
            state
        );

        let refused = |bytes: &[u8]| decode::<(u64, Vec<(i64, String)>)>(&source, bytes);
        let err = refused(b"garbage").unwrap_err().message;
        assert!(
            err.starts_with("the state of logs/3 cannot be restored (7 bytes): not a snapshot"),
            "{err}"
        );
        assert!(
            refused(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .message
                .contains("corrupt")
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            refused(&longer)
                .unwrap_err()
                .message
                .contains("1 trailing bytes")
        );
        let mut future = bytes.clone();
        future[4] = 9;
        assert!(
            refused(&future)
                .unwrap_err()
                .message
                .contains("format 9 is not 1")
        );
        assert!(refused(&[]).is_err());
    }

    #[test]
    fn partitions_find_insert_and_remove() {
        let mut p: Partitions<u32> = Partitions::default();
        *p.get_or_insert_with("a", 0, || 1) += 1;
        *p.get_or_insert_with("a", 1, || 10) += 1;
        *p.get_or_insert_with("a", 0, || 100) += 1;
        assert_eq!(p.get(&SourcePartition::new("a", 0)), Some(&3));
        assert_eq!(p.remove(&SourcePartition::new("a", 0)), Some(3));
        assert_eq!(p.get(&SourcePartition::new("a", 1)), Some(&11));
        assert_eq!(
            *p.get_or_insert_with("a", 1, || 0),
            11,
            "the moved entry is found"
        );
        p.insert(SourcePartition::new("b", 0), 5);
        assert_eq!(p.len(), 2);
        assert_eq!(
            *p.get_or_insert_with("a", 0, || 0),
            0,
            "removed means empty"
        );
    }
}
