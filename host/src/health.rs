//! The pipeline's own fail states, as first-class conditions.
//!
//! Any part of the host raises a condition (`KafkaUnavailable` for brokers `a:9092`, say) and
//! clears it when it recovers. Each transition is logged once with its context and counted;
//! active conditions decide readiness (`/readyz`) and every transition is published to
//! subscribers — the alerting sink turns them into SNS messages under the alert policy.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::sync::broadcast;

/// The states operators must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FailState {
    /// Brokers unreachable for longer than the configured grace period.
    KafkaUnavailable,
    /// A backfill asked for an S3 object that is not there.
    S3MissingFile,
    /// The plugin with `role = "metrics"` failed a call or emitted invalid metrics.
    MetricsGenerationFailed,
    /// A plugin keeps failing (its batches are dead-lettered).
    PluginFailing,
    /// A sink cannot deliver (endpoint down, throttled beyond retries).
    SinkUnavailable,
}

impl FailState {
    pub fn name(self) -> &'static str {
        match self {
            FailState::KafkaUnavailable => "KafkaUnavailable",
            FailState::S3MissingFile => "S3MissingFile",
            FailState::MetricsGenerationFailed => "MetricsGenerationFailed",
            FailState::PluginFailing => "PluginFailing",
            FailState::SinkUnavailable => "SinkUnavailable",
        }
    }

    /// Whether an active condition makes the host not ready. A missing backfill object is
    /// reported and alerted, but the pipeline itself is fine.
    pub fn blocks_readiness(self) -> bool {
        !matches!(self, FailState::S3MissingFile)
    }

    pub const ALL: [FailState; 5] = [
        FailState::KafkaUnavailable,
        FailState::S3MissingFile,
        FailState::MetricsGenerationFailed,
        FailState::PluginFailing,
        FailState::SinkUnavailable,
    ];
}

/// An active condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub state: FailState,
    /// What it is about: a plugin, a sink, brokers, an object key.
    pub subject: String,
    /// What happened, for the operator.
    pub context: String,
    /// When it was raised, ns since the epoch.
    pub since: i64,
}

/// A transition, as published to subscribers.
#[derive(Debug, Clone)]
pub enum HealthEvent {
    Raised(Condition),
    Cleared(Condition),
}

pub struct Health {
    active: Mutex<BTreeMap<(FailState, String), Condition>>,
    counts: Mutex<BTreeMap<FailState, u64>>,
    started: AtomicBool,
    events: broadcast::Sender<HealthEvent>,
}

static GLOBAL: OnceLock<Health> = OnceLock::new();

/// The process-wide health registry.
pub fn global() -> &'static Health {
    GLOBAL.get_or_init(Health::new)
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            active: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            started: AtomicBool::new(false),
            events: broadcast::channel(256).0,
        }
    }

    /// The pipeline is up and consuming.
    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::Relaxed);
    }

    /// Raise `state` for `subject`. Logged and published only on the transition.
    pub fn raise(&self, state: FailState, subject: &str, context: impl Into<String>) {
        let context = context.into();
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let key = (state, subject.to_owned());
        if active.contains_key(&key) && state != FailState::S3MissingFile {
            return;
        }
        let condition = Condition {
            state,
            subject: subject.to_owned(),
            context,
            since: crate::time::now_ns(),
        };
        tracing::error!(state = state.name(), subject, context = %condition.context, "fail state raised");
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(state)
            .or_default() += 1;
        active.insert(key, condition.clone());
        let _ = self.events.send(HealthEvent::Raised(condition));
    }

    /// Clear `state` for `subject`, if it was raised.
    pub fn clear(&self, state: FailState, subject: &str) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(condition) = active.remove(&(state, subject.to_owned())) {
            tracing::info!(state = state.name(), subject, "fail state cleared");
            let _ = self.events.send(HealthEvent::Cleared(condition));
        }
    }

    pub fn is_active(&self, state: FailState, subject: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(state, subject.to_owned()))
    }

    /// Active conditions.
    pub fn conditions(&self) -> Vec<Condition> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many times each state was raised.
    pub fn counts(&self) -> BTreeMap<FailState, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Started, and no active condition that blocks readiness.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Relaxed)
            && self
                .conditions()
                .iter()
                .all(|c| !c.state.blocks_readiness())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_and_clear_publish_transitions_once() {
        let health = Health::new();
        health.set_started(true);
        let mut events = health.subscribe();
        assert!(health.is_ready());
        health.raise(FailState::SinkUnavailable, "lake", "503 from S3");
        health.raise(FailState::SinkUnavailable, "lake", "503 again");
        assert!(!health.is_ready());
        assert_eq!(health.counts()[&FailState::SinkUnavailable], 1);
        health.clear(FailState::SinkUnavailable, "lake");
        health.clear(FailState::SinkUnavailable, "lake");
        assert!(health.is_ready());
        assert!(
            matches!(events.try_recv(), Ok(HealthEvent::Raised(c)) if c.context == "503 from S3")
        );
        assert!(matches!(events.try_recv(), Ok(HealthEvent::Cleared(_))));
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn a_missing_backfill_object_does_not_block_readiness() {
        let health = Health::new();
        health.set_started(true);
        health.raise(FailState::S3MissingFile, "s3://b/raw/x.gz", "NoSuchKey");
        assert!(health.is_ready());
        assert_eq!(health.conditions().len(), 1);
    }
}
