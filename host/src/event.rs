//! What travels from the pipeline to the sinks: per route, a batch of one kind of event,
//! shared between the sinks that take the route, with the acknowledgement it owes.

use crate::ack::AckHandle;
use crate::batch::{Batch, PackedBatch};
use crate::route::RouteName;
use crate::{Origin, Record};
use std::sync::{Arc, OnceLock};

/// A source message as it arrived, before any decoding: what the `raw` route carries.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub origin: Origin,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The source's timestamp (Kafka message time), ns since the epoch.
    pub timestamp: i64,
}

#[cfg(test)]
impl RawMessage {
    /// A `{}` message of topic `t` at `partition` and `offset`, for tests.
    pub(crate) fn at(partition: i32, offset: i64) -> RawMessage {
        RawMessage {
            origin: crate::Origin {
                topic: "t".into(),
                partition,
                offset,
            },
            key: None,
            payload: b"{}".to_vec(),
            timestamp: 0,
        }
    }
}

/// A record that could not be processed or delivered, with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub origin: Origin,
    /// What happened and where, for the operator.
    pub reason: String,
    /// The original message bytes when known, else the record as JSON.
    pub payload: Vec<u8>,
    /// When it was dead-lettered, ns since the epoch.
    pub timestamp: i64,
}

impl DeadLetter {
    /// Replace any secret value a reason quotes (an error echoing a config value) with
    /// `<redacted>`, before the letters leave for a sink or a tap. One atomic load per
    /// letter when no secret was resolved.
    pub fn redact_reasons(letters: &mut [DeadLetter]) {
        for letter in letters {
            if let std::borrow::Cow::Owned(clean) = crate::secrets::redact(&letter.reason) {
                letter.reason = clean;
            }
        }
    }

    /// The SHA-256 of the whole payload, in lowercase hex. A sink that writes only a
    /// prefix of the payload writes this with it, so the original can be told apart and
    /// checked (`sha256sum`) once it is fetched from its origin.
    pub fn payload_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(&self.payload);
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        hex
    }
}

/// One route's share of a pipeline batch.
#[derive(Debug)]
pub enum Events {
    Logs(Logs),
    Raw(Vec<RawMessage>),
    DeadLetters(Vec<DeadLetter>),
}

/// Log records: the chain's packed output as it came, or owned records. The pipeline sends
/// packed ones only on routes whose sinks all read them in place ([`Logs::packed`]); any
/// sink may still read [`Logs::records`], decoded on first use, once for the route.
pub struct Logs {
    batch: Batch,
    decoded: OnceLock<Vec<Record>>,
}

impl Logs {
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    pub fn records(&self) -> &[Record] {
        match &self.batch {
            Batch::Records(records) => records,
            Batch::Packed(packed) => self.decoded.get_or_init(|| packed.decode()),
        }
    }

    /// The records still packed, when they are.
    pub fn packed(&self) -> Option<&PackedBatch> {
        match &self.batch {
            Batch::Packed(packed) => Some(packed),
            Batch::Records(_) => None,
        }
    }
}

impl From<Batch> for Logs {
    fn from(batch: Batch) -> Logs {
        Logs {
            batch,
            decoded: OnceLock::new(),
        }
    }
}

impl From<Vec<Record>> for Logs {
    fn from(records: Vec<Record>) -> Logs {
        Batch::Records(records).into()
    }
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs")
            .field("len", &self.len())
            .field("packed", &self.packed().is_some())
            .finish()
    }
}

impl Events {
    pub fn len(&self) -> usize {
        match self {
            Events::Logs(v) => v.len(),
            Events::Raw(v) => v.len(),
            Events::DeadLetters(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a sink receives. The sink must call [`AckHandle::ack`] once every event is durably
/// written (or itself dead-lettered); dropping the handle unacknowledged fails the batch.
#[derive(Debug)]
pub struct SinkBatch {
    pub route: RouteName,
    pub events: Arc<Events>,
    pub ack: AckHandle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_hashes_its_whole_payload() {
        let letter = DeadLetter {
            origin: Origin {
                topic: "raw".into(),
                partition: 0,
                offset: 7,
            },
            reason: "why".into(),
            payload: b"abc".to_vec(),
            timestamp: 0,
        };
        // `printf abc | sha256sum`
        assert_eq!(
            letter.payload_sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
