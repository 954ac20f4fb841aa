//! Waiting out a destination that cannot take anything right now, the same way in every
//! sink: exponential backoff with full jitter (so many hosts do not retry in step), no
//! deadline unless the caller has one (a revoked partition's drain), `SinkUnavailable`
//! raised after a few failed attempts and cleared on the first success, and a log line on
//! the first attempt and every twentieth, not on each.

use super::SinkStats;
use crate::health::{self, FailState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Failed attempts in a row before `SinkUnavailable` is raised.
pub const ATTEMPTS_BEFORE_UNAVAILABLE: u32 = 3;

/// Retry delays: doubling from `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn from_millis(initial: u64, max: u64) -> Backoff {
        Backoff {
            initial: Duration::from_millis(initial),
            max: Duration::from_millis(max),
        }
    }

    /// Check the `retry_initial_backoff_ms` and `retry_max_backoff_ms` keys of a sink.
    pub fn check_keys(initial_ms: u64, max_ms: u64) -> Result<(), (String, String)> {
        if initial_ms == 0 || max_ms < initial_ms {
            return Err((
                "retry_max_backoff_ms".into(),
                "retry_initial_backoff_ms must be at least 1 and no more than retry_max_backoff_ms"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The delay before attempt `attempt + 1`: exponential, capped, with full jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        backoff(attempt, self.initial, self.max)
    }
}

/// Retry delays for transient sink failures: exponential from `base`, capped, with full
/// jitter so many hosts do not retry in step.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    use rand::Rng;
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

/// One sink's failed attempts in a row, and what an operator reads while they last.
pub struct Retry {
    sink: String,
    stats: Arc<SinkStats>,
    backoff: Backoff,
    /// What to check, appended to `SinkUnavailable` ("Check that the topic exists…").
    hint: String,
    attempt: u32,
}

impl Retry {
    pub fn new(sink: &str, stats: Arc<SinkStats>, backoff: Backoff, hint: &str) -> Retry {
        Retry {
            sink: sink.to_owned(),
            stats,
            backoff,
            hint: hint.to_owned(),
            attempt: 0,
        }
    }

    /// The destination took what it was given: clear `SinkUnavailable` if it was raised.
    pub fn succeeded(&mut self) {
        if self.attempt > 0 {
            if self.attempt >= ATTEMPTS_BEFORE_UNAVAILABLE {
                tracing::info!(sink = %self.sink, attempts = self.attempt,
                    "the destination takes writes again; everything held back is delivered");
            }
            health::global().clear(FailState::SinkUnavailable, &self.sink);
        }
        self.attempt = 0;
    }

    /// `items` could not be written (`what`: "sending 12 messages to topic `t`"; `error`: the
    /// last reason): count them, say so, raise `SinkUnavailable` once it lasts, and wait
    /// before the next attempt — no later than `until`.
    pub async fn failed(&mut self, items: u64, what: &str, error: &str, until: Option<Instant>) {
        self.attempt += 1;
        let attempt = self.attempt;
        SinkStats::add(&self.stats.retried, items);
        if attempt == 1 || attempt.is_multiple_of(20) {
            tracing::warn!(sink = %self.sink, attempt, %error,
                "{what} failed; retrying, and reading no more input until it succeeds");
        }
        if attempt >= ATTEMPTS_BEFORE_UNAVAILABLE {
            health::global().raise(
                FailState::SinkUnavailable,
                &self.sink,
                format!("{what} failed {attempt} times: {error}. {}", self.hint),
            );
        }
        let mut delay = self.backoff.delay(attempt);
        if let Some(until) = until {
            delay = delay.min(until.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let b = Backoff::from_millis(100, 1_000);
        for _ in 0..50 {
            let first = b.delay(0);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = b.delay(2);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = b.delay(30);
            assert!((500..=1_000).contains(&late.as_millis()), "{late:?}");
        }
    }
}
