//! The Kafka source's standing in its group, as operators see it: the static member id a
//! restarted host comes back under, and each partition's lag and committed offset from
//! librdkafka's statistics.
//!
//! Static membership (`group.instance.id`): a member that restarts under the same id
//! within the session timeout gets its partitions back at once, without a rebalance; a
//! dynamic member's partitions sit unread until the dead member's session times out.
//! The id defaults to `<hostname>-<group_id>`, so two hosts of one group on one machine
//! must each set `group_instance_id`: under one id the second to join fences the first.

use super::kafka::KafkaSourceConfig;
use super::{SourceError, SourceStats};
use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::statistics::Partition;
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

impl KafkaSourceConfig {
    /// The `group.instance.id` this host joins under; `None` for dynamic membership
    /// (`group_instance_id = ""`).
    pub fn instance_id(&self) -> Option<String> {
        match &self.group_instance_id {
            Some(id) if id.trim().is_empty() => None,
            Some(id) => Some(id.clone()),
            None => Some(format!("{}-{}", hostname(), self.group_id)),
        }
    }
}

/// Watches for the client's fatal error — a member fenced out of its group by another
/// that joined under the same `group.instance.id` — which no poll recovers from.
pub struct FatalWatch {
    group: String,
    instance_id: Option<String>,
    last: Instant,
}

impl FatalWatch {
    pub fn new(config: &KafkaSourceConfig) -> FatalWatch {
        FatalWatch {
            group: config.group_id.clone(),
            instance_id: config.instance_id(),
            last: Instant::now(),
        }
    }

    /// At most once a second (reading the error allocates), the client's fatal error.
    pub fn check<C: ClientContext>(&mut self, client: &Client<C>) -> Result<(), SourceError> {
        if self.last.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.last = Instant::now();
        let Some((code, reason)) = client.fatal_error() else {
            return Ok(());
        };
        Err(SourceError::Kafka(match (code, &self.instance_id) {
            (RDKafkaErrorCode::FencedInstanceId, Some(id)) => format!(
                "fenced out of group `{}`: another member joined under group.instance.id `{id}` ({reason}). Two hosts of one group on one machine each need their own `source.group_instance_id`.",
                self.group
            ),
            _ => format!("the consumer failed and cannot go on: {code:?}: {reason}"),
        }))
    }
}

/// This machine's name; `localhost` where the system has none to give.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.trim().is_empty() => name.trim().to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// A partition's lag: messages between the end of its log and the group's committed
/// offset. A partition the group never committed counts from the start of its log (all of
/// it is still to be committed), where librdkafka reports no lag at all. `None` for a
/// partition not fetched here (not assigned, or given up) or whose end is not known yet.
/// `committed`: the group's committed offset when the source knows it better than the
/// consumer's statistics (see [`record`]).
pub fn partition_lag(p: &Partition, committed: Option<i64>) -> Option<i64> {
    let fetched = !matches!(p.fetch_state.as_str(), "none" | "stopping" | "stopped");
    // The end librdkafka measures from: the last stable offset under read_committed.
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    if p.partition < 0 || !fetched || end < 0 {
        return None;
    }
    if let Some(committed) = committed {
        return Some((end - committed).max(0));
    }
    if p.consumer_lag >= 0 {
        return Some(p.consumer_lag);
    }
    if p.committed_offset >= 0 {
        return Some((end - p.committed_offset).max(0));
    }
    Some((end - p.lo_offset.max(0)).max(0))
}

/// Record each assigned partition's lag and committed offset from a statistics report.
/// Reading exactly once, the offsets are committed in transactions, which the consumer's
/// statistics never see: the source's own record of them (`stats.transactions`) is used.
pub fn record(stats: &SourceStats, statistics: rdkafka::Statistics, transactional: bool) {
    let known = transactional.then(|| lock(&stats.transaction_commits).clone());
    let mut lag = stats.lag.lock().unwrap_or_else(|e| e.into_inner());
    let mut committed = stats.committed.lock().unwrap_or_else(|e| e.into_inner());
    lag.clear();
    committed.clear();
    for (topic, t) in statistics.topics {
        for (partition, p) in t.partitions {
            let known = (known.as_ref()).map(|k| k.get(&(topic.clone(), partition)).copied());
            let Some(behind) = partition_lag(&p, known.flatten()) else {
                continue;
            };
            lag.insert((topic.clone(), partition), behind);
            let at = known.unwrap_or(Some(p.committed_offset)).unwrap_or(-1);
            if at >= 0 {
                committed.insert((topic.clone(), partition), at);
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(json: &str) -> Partition {
        let base = serde_json::json!({
            "partition": 0, "broker": 1, "leader": 1, "desired": true, "unknown": false,
            "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
            "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "active", "query_offset": -1001,
            "next_offset": 0, "app_offset": -1001, "stored_offset": -1001,
            "committed_offset": -1001, "eof_offset": -1001, "lo_offset": -1, "hi_offset": -1,
            "ls_offset": -1, "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 0,
            "txbytes": 0, "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0,
            "msgs_inflight": 0, "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0
        });
        let mut value = base;
        let patch: serde_json::Value = serde_json::from_str(json).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_committed_partition_reports_librdkafkas_lag() {
        let p = partition(r#"{"hi_offset": 120, "committed_offset": 100, "consumer_lag": 20}"#);
        assert_eq!(partition_lag(&p, None), Some(20));
    }

    #[test]
    fn reading_exactly_once_the_lag_counts_from_the_offset_the_last_transaction_committed() {
        // The consumer never commits itself: its statistics keep the offset it was
        // assigned at, and librdkafka's own lag counts from there.
        let p = partition(
            r#"{"hi_offset": 900, "ls_offset": 900, "committed_offset": 100, "consumer_lag": 800}"#,
        );
        assert_eq!(partition_lag(&p, Some(880)), Some(20));
        assert_eq!(partition_lag(&p, None), Some(800));
    }

    #[test]
    fn a_partition_never_committed_counts_from_the_start_of_its_log() {
        let p = partition(r#"{"lo_offset": 10, "hi_offset": 510, "ls_offset": 510}"#);
        assert_eq!(partition_lag(&p, None), Some(500));
        let empty = partition(r#"{"lo_offset": 0, "hi_offset": 0, "ls_offset": 0}"#);
        assert_eq!(partition_lag(&empty, None), Some(0));
    }

    #[test]
    fn unassigned_and_unknown_partitions_report_nothing() {
        let given_up = r#"{"fetch_state": "stopped", "hi_offset": 5, "ls_offset": 5}"#;
        assert_eq!(partition_lag(&partition(given_up), None), None);
        assert_eq!(
            partition_lag(&partition(r#"{"partition": -1, "hi_offset": 5}"#), None),
            None
        );
        assert_eq!(
            partition_lag(&partition(r#"{"hi_offset": -1}"#), None),
            None
        );
    }
}
