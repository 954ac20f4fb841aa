//! The alert policy: which alerts and fail states become messages, and when.
//!
//! Pure logic — inputs are observations and the current time, outputs are
//! [`Notification`]s — so every rule is unit tested with an injected clock.
//!
//! - **Cooldown** per key ((service, kind) for data alerts, (state, subject) for fail
//!   states): at most one firing message per key per `cooldown_s`. A sustained incident
//!   sends one message, then a reminder only if it outlasts the cooldown.
//! - **Resolution**: a data incident clears after `resolve_after_windows` metric windows
//!   of its service with no alert of that kind; a fail state clears when the host clears
//!   it. A resolved message goes out only for incidents whose firing message went out.
//! - **Grouping**: firing data alerts whose windows start in the same `group_window_s`
//!   bucket go out as one message.
//! - **Minimum severity**: quieter alerts are never sent, but they keep an open incident
//!   open (the service is still anomalous).
//! - **Rate limit**: at most `max_messages_per_minute` firing messages per minute of wall
//!   clock; dropped ones are counted and announced in the next message. Resolved messages
//!   are not limited: there is at most one per firing message sent.
//!
//! Time: data alerts use event time (window ends), so a backfill of last week behaves as
//! it did live; fail states and the rate limit use the wall clock.

use super::config::{PolicyConfig, Severity};
use crate::health::{Condition, FailState};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

const NS_PER_SEC: i64 = 1_000_000_000;
/// More alerts than this in one group are split into several messages, so each stays
/// far below the SNS message size limit.
pub const MAX_ALERTS_PER_MESSAGE: usize = 20;

/// An anomaly the metrics plugin reported (a record on the `alerts` route).
#[derive(Debug, Clone, PartialEq)]
pub struct DataAlert {
    /// Deterministic: the same service, kind and window always give the same id.
    pub id: String,
    pub service: String,
    /// `error_rate_spike` or `latency_p99_spike`.
    pub kind: String,
    pub severity: Severity,
    pub observed: f64,
    pub baseline: f64,
    pub zscore: f64,
    /// Event time, ns.
    pub window_start: i64,
    pub window_end: i64,
    /// The plugin's one-line description.
    pub description: String,
}

/// A closed metrics window of one service (a record on the `metrics` route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricWindow<'a> {
    pub service: &'a str,
    pub start: i64,
    pub end: i64,
}

/// What to send.
#[derive(Debug, Clone)]
pub enum Notification {
    /// One or more data alerts of the same group window (several services or kinds).
    Firing {
        alerts: Vec<DataAlert>,
        /// Messages the rate limit dropped since the last one sent.
        rate_limited_before: u64,
    },
    /// A data incident that was announced has cleared.
    Resolved {
        /// The last alert of the incident.
        last: DataAlert,
        /// Window start of the incident's first alert.
        first_window_start: i64,
        /// End of the first healthy window that cleared it.
        cleared_at: i64,
    },
    /// A fail state was raised (or is still active after a cooldown).
    FailRaised {
        condition: Condition,
        severity: Severity,
        reminder: bool,
        rate_limited_before: u64,
    },
    /// A fail state that was announced has cleared.
    FailCleared {
        condition: Condition,
        severity: Severity,
        /// Wall clock, ns.
        cleared_at: i64,
    },
}

/// Why an alert did not become (part of) a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queued in its group; goes out when the group closes.
    Queued,
    BelowMinSeverity,
    /// Same (service, kind) was announced less than `cooldown_s` ago.
    Cooldown,
}

/// Counters for `/metrics` and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PolicyStats {
    pub queued: u64,
    pub suppressed_cooldown: u64,
    pub suppressed_severity: u64,
    pub suppressed_rate_limit: u64,
    pub resolved: u64,
}

#[derive(Debug)]
struct DataIncident {
    first_window_start: i64,
    last_alert: DataAlert,
    /// Whether a firing message of this incident went out (or is queued to).
    announced: bool,
    /// Windows of the service since the last alert of this kind.
    healthy_windows: BTreeSet<i64>,
}

#[derive(Debug)]
struct FailIncident {
    condition: Condition,
    announced: bool,
}

/// The policy's state.
#[derive(Debug)]
pub struct AlertPolicy {
    config: PolicyConfig,
    incidents: BTreeMap<(String, String), DataIncident>,
    /// Event time of the last firing message per (service, kind); kept after resolution
    /// so a flapping service does not page every few minutes.
    last_data_firing: HashMap<(String, String), i64>,
    /// Queued firing alerts by group bucket (window start / group window).
    groups: BTreeMap<i64, Group>,
    /// The highest window end seen: groups before it are complete.
    watermark: i64,
    fail_incidents: BTreeMap<(FailState, String), FailIncident>,
    /// Wall clock of the last firing message per (state, subject).
    last_fail_firing: HashMap<(FailState, String), i64>,
    /// Wall clock of firing messages sent in the last minute.
    sent_times: VecDeque<i64>,
    rate_limited: u64,
    stats: PolicyStats,
}

#[derive(Debug)]
struct Group {
    alerts: Vec<DataAlert>,
    /// Wall clock when the group opened: a group on a stream that went quiet still
    /// closes after `group_window_s` of wall clock.
    opened_wall: i64,
}

impl AlertPolicy {
    pub fn new(config: PolicyConfig) -> AlertPolicy {
        AlertPolicy {
            config,
            incidents: BTreeMap::new(),
            last_data_firing: HashMap::new(),
            groups: BTreeMap::new(),
            watermark: i64::MIN,
            fail_incidents: BTreeMap::new(),
            last_fail_firing: HashMap::new(),
            sent_times: VecDeque::new(),
            rate_limited: 0,
            stats: PolicyStats::default(),
        }
    }

    pub fn stats(&self) -> PolicyStats {
        self.stats
    }

    fn cooldown_ns(&self) -> i64 {
        self.config.cooldown_s as i64 * NS_PER_SEC
    }

    fn group_ns(&self) -> i64 {
        self.config.group_window_s.max(1) as i64 * NS_PER_SEC
    }

    /// Whether firing messages are queued and not yet released.
    pub fn has_queued(&self) -> bool {
        !self.groups.is_empty()
    }

    /// An alert record arrived. `now_wall` only dates a new group.
    pub fn on_alert(&mut self, alert: DataAlert, now_wall: i64) -> Verdict {
        self.watermark = self.watermark.max(alert.window_end);
        let key = (alert.service.clone(), alert.kind.clone());
        let eligible = alert.severity >= self.config.min_severity;
        let cooling = self
            .last_data_firing
            .get(&key)
            .is_some_and(|&t| alert.window_end - t < self.cooldown_ns());

        let incident = match self.incidents.get_mut(&key) {
            Some(incident) => {
                if alert.window_end >= incident.last_alert.window_end {
                    incident.last_alert = alert.clone();
                }
                let last_end = incident.last_alert.window_end;
                incident.healthy_windows.retain(|&start| start >= last_end);
                incident
            }
            None if !eligible => {
                // Too quiet to open an incident on its own.
                self.stats.suppressed_severity += 1;
                return Verdict::BelowMinSeverity;
            }
            None => self.incidents.entry(key.clone()).or_insert(DataIncident {
                first_window_start: alert.window_start,
                last_alert: alert.clone(),
                announced: false,
                healthy_windows: BTreeSet::new(),
            }),
        };
        if !eligible {
            self.stats.suppressed_severity += 1;
            return Verdict::BelowMinSeverity;
        }
        if cooling {
            self.stats.suppressed_cooldown += 1;
            return Verdict::Cooldown;
        }
        incident.announced = true;
        self.last_data_firing.insert(key, alert.window_end);
        let bucket = alert.window_start.div_euclid(self.group_ns());
        self.groups
            .entry(bucket)
            .or_insert_with(|| Group {
                alerts: Vec::new(),
                opened_wall: now_wall,
            })
            .alerts
            .push(alert);
        self.stats.queued += 1;
        Verdict::Queued
    }

    /// A metrics window closed for a service: evidence that its open incidents may clear.
    pub fn on_window(&mut self, window: MetricWindow<'_>) {
        self.watermark = self.watermark.max(window.end);
        for ((service, _), incident) in self.incidents.iter_mut() {
            if service == window.service && window.start >= incident.last_alert.window_end {
                incident.healthy_windows.insert(window.start);
            }
        }
    }

    /// Everything observed so far is complete (the alerts and metrics of one pipeline
    /// output arrive as separate batches, so this is called between outputs, never inside
    /// one): resolve cleared incidents and release complete groups.
    pub fn settle(&mut self, now_wall: i64) -> Vec<Notification> {
        let mut out = self.resolve();
        let group_ns = self.group_ns();
        let watermark = self.watermark;
        let complete: Vec<i64> = self
            .groups
            .keys()
            .copied()
            .filter(|&bucket| (bucket + 1).saturating_mul(group_ns) <= watermark)
            .collect();
        for bucket in complete {
            self.release(bucket, now_wall, &mut out);
        }
        out
    }

    /// Wall-clock duties: groups open for a whole group window on a quiet stream, and
    /// fail states whose cooldown has passed while still active.
    pub fn poll(&mut self, now_wall: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let group_ns = self.group_ns();
        let stale: Vec<i64> = self
            .groups
            .iter()
            .filter(|(_, g)| now_wall - g.opened_wall >= group_ns)
            .map(|(&b, _)| b)
            .collect();
        for bucket in stale {
            self.release(bucket, now_wall, &mut out);
        }
        let cooldown = self.cooldown_ns();
        let due: Vec<(FailState, String)> = self
            .fail_incidents
            .keys()
            .filter(|key| {
                self.last_fail_firing
                    .get(*key)
                    .is_none_or(|&t| now_wall - t >= cooldown)
            })
            .cloned()
            .collect();
        for key in due {
            let reminder = self.fail_incidents[&key].announced;
            self.fire_fail(key, reminder, now_wall, &mut out);
        }
        out
    }

    /// The input ended or the host stops: resolve what can be, release every group.
    pub fn flush(&mut self, now_wall: i64) -> Vec<Notification> {
        let mut out = self.resolve();
        let buckets: Vec<i64> = self.groups.keys().copied().collect();
        for bucket in buckets {
            self.release(bucket, now_wall, &mut out);
        }
        out
    }

    /// A fail state was raised.
    pub fn on_fail_raised(&mut self, condition: Condition, now_wall: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let key = (condition.state, condition.subject.clone());
        if severity_of(condition.state) < self.config.min_severity {
            self.stats.suppressed_severity += 1;
            return out;
        }
        let cooling = self
            .last_fail_firing
            .get(&key)
            .is_some_and(|&t| now_wall - t < self.cooldown_ns());
        if is_momentary(condition.state) {
            // An occurrence, not a state: announce it, never "resolve" it.
            if cooling {
                self.stats.suppressed_cooldown += 1;
            } else {
                self.fail_incidents.remove(&key);
                self.fail_incidents.insert(
                    key.clone(),
                    FailIncident {
                        condition,
                        announced: false,
                    },
                );
                self.fire_fail(key.clone(), false, now_wall, &mut out);
                self.fail_incidents.remove(&key);
            }
            return out;
        }
        let incident = self
            .fail_incidents
            .entry(key.clone())
            .or_insert(FailIncident {
                condition: condition.clone(),
                announced: false,
            });
        incident.condition = condition;
        if cooling {
            // Flapping: `poll` announces it if it is still active when the cooldown ends.
            self.stats.suppressed_cooldown += 1;
            return out;
        }
        self.fire_fail(key, false, now_wall, &mut out);
        out
    }

    /// A fail state was cleared.
    pub fn on_fail_cleared(&mut self, condition: &Condition, now_wall: i64) -> Vec<Notification> {
        let key = (condition.state, condition.subject.clone());
        match self.fail_incidents.remove(&key) {
            Some(incident) if incident.announced => {
                self.stats.resolved += 1;
                vec![Notification::FailCleared {
                    severity: severity_of(key.0),
                    condition: incident.condition,
                    cleared_at: now_wall,
                }]
            }
            _ => Vec::new(),
        }
    }

    fn fire_fail(
        &mut self,
        key: (FailState, String),
        reminder: bool,
        now_wall: i64,
        out: &mut Vec<Notification>,
    ) {
        // Counted against the cooldown even when rate-limited, so a dropped message is
        // retried once per cooldown rather than on every poll.
        self.last_fail_firing.insert(key.clone(), now_wall);
        let Some(rate_limited_before) = self.take_rate_slot(now_wall, 1) else {
            return;
        };
        let Some(incident) = self.fail_incidents.get_mut(&key) else {
            return;
        };
        incident.announced = true;
        out.push(Notification::FailRaised {
            condition: incident.condition.clone(),
            severity: severity_of(key.0),
            reminder,
            rate_limited_before,
        });
    }

    fn resolve(&mut self) -> Vec<Notification> {
        let needed = self.config.resolve_after_windows.max(1) as usize;
        let cleared: Vec<(String, String)> = self
            .incidents
            .iter()
            .filter(|(_, i)| i.healthy_windows.len() >= needed)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in cleared {
            let Some(incident) = self.incidents.remove(&key) else {
                continue;
            };
            if !incident.announced {
                continue;
            }
            let cleared_at = incident.healthy_windows.iter().nth(needed - 1).map_or(
                incident.last_alert.window_end,
                |&start| {
                    start + (incident.last_alert.window_end - incident.last_alert.window_start)
                },
            );
            self.stats.resolved += 1;
            out.push(Notification::Resolved {
                last: incident.last_alert,
                first_window_start: incident.first_window_start,
                cleared_at,
            });
        }
        out
    }

    fn release(&mut self, bucket: i64, now_wall: i64, out: &mut Vec<Notification>) {
        let Some(group) = self.groups.remove(&bucket) else {
            return;
        };
        for chunk in group.alerts.chunks(MAX_ALERTS_PER_MESSAGE) {
            match self.take_rate_slot(now_wall, chunk.len() as u64) {
                Some(rate_limited_before) => out.push(Notification::Firing {
                    alerts: chunk.to_vec(),
                    rate_limited_before,
                }),
                None => {
                    // Not announced after all: no resolved message will follow.
                    for alert in chunk {
                        let key = (alert.service.clone(), alert.kind.clone());
                        if let Some(incident) = self.incidents.get_mut(&key) {
                            incident.announced = false;
                        }
                    }
                }
            }
        }
    }

    /// Take a slot in the per-minute budget. `Some(n)`: send, `n` messages were dropped
    /// since the last one sent; `None`: over the limit, `alerts` are counted as dropped.
    fn take_rate_slot(&mut self, now_wall: i64, alerts: u64) -> Option<u64> {
        while self
            .sent_times
            .front()
            .is_some_and(|&t| now_wall - t >= 60 * NS_PER_SEC)
        {
            self.sent_times.pop_front();
        }
        if self.sent_times.len() >= self.config.max_messages_per_minute as usize {
            self.rate_limited += 1;
            self.stats.suppressed_rate_limit += alerts;
            return None;
        }
        self.sent_times.push_back(now_wall);
        Some(std::mem::take(&mut self.rate_limited))
    }
}

/// How loud each fail state is.
pub fn severity_of(state: FailState) -> Severity {
    match state {
        FailState::KafkaUnavailable | FailState::SinkUnavailable | FailState::PluginFailing => {
            Severity::Critical
        }
        // Cleaned logs keep flowing; only metrics and alerts are missing.
        FailState::MetricsGenerationFailed => Severity::Warning,
        FailState::S3MissingFile => Severity::Warning,
    }
}

/// States that report an occurrence rather than a lasting condition: never "resolved".
fn is_momentary(state: FailState) -> bool {
    matches!(state, FailState::S3MissingFile)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * NS_PER_SEC;
    /// 2026-11-25T10:00:00Z
    const T0: i64 = 1_795_600_800 * NS_PER_SEC;

    fn config() -> PolicyConfig {
        PolicyConfig {
            cooldown_s: 900,
            group_window_s: 60,
            min_severity: Severity::Warning,
            max_messages_per_minute: 10,
            resolve_after_windows: 1,
        }
    }

    fn alert(service: &str, kind: &str, minute: i64, severity: Severity) -> DataAlert {
        DataAlert {
            id: format!("{service}-{kind}-{minute}"),
            service: service.into(),
            kind: kind.into(),
            severity,
            observed: 0.6,
            baseline: 0.01,
            zscore: 12.0,
            window_start: T0 + minute * MIN,
            window_end: T0 + (minute + 1) * MIN,
            description: format!("{service} {kind} at minute {minute}"),
        }
    }

    fn window(policy: &mut AlertPolicy, service: &str, minute: i64) {
        policy.on_window(MetricWindow {
            service,
            start: T0 + minute * MIN,
            end: T0 + (minute + 1) * MIN,
        });
    }

    /// Feed one pipeline output of `minute`: metrics for every service, alerts for some;
    /// then settle as the sink does between outputs.
    fn output(
        policy: &mut AlertPolicy,
        minute: i64,
        services: &[&str],
        alerts: &[DataAlert],
        wall: i64,
    ) -> Vec<Notification> {
        for s in services {
            window(policy, s, minute);
        }
        for a in alerts {
            policy.on_alert(a.clone(), wall);
        }
        policy.settle(wall)
    }

    fn firing_ids(ns: &[Notification]) -> Vec<Vec<String>> {
        ns.iter()
            .filter_map(|n| match n {
                Notification::Firing { alerts, .. } => {
                    Some(alerts.iter().map(|a| a.id.clone()).collect())
                }
                _ => None,
            })
            .collect()
    }

    fn resolved(ns: &[Notification]) -> Vec<(String, String)> {
        ns.iter()
            .filter_map(|n| match n {
                Notification::Resolved { last, .. } => {
                    Some((last.service.clone(), last.kind.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_sustained_spike_fires_once_and_resolves_once() {
        let mut p = AlertPolicy::new(config());
        let mut sent = Vec::new();
        for minute in 0..20 {
            let alerts: Vec<DataAlert> = if (5..9).contains(&minute) {
                vec![alert(
                    "checkout",
                    "error_rate_spike",
                    minute,
                    Severity::Critical,
                )]
            } else {
                Vec::new()
            };
            sent.extend(output(&mut p, minute, &["checkout", "cart"], &alerts, 0));
        }
        sent.extend(p.flush(0));
        assert_eq!(
            firing_ids(&sent),
            vec![vec!["checkout-error_rate_spike-5".to_string()]]
        );
        assert_eq!(
            resolved(&sent),
            vec![("checkout".into(), "error_rate_spike".into())]
        );
        match sent.last().unwrap() {
            Notification::Resolved {
                last,
                first_window_start,
                cleared_at,
            } => {
                assert_eq!(last.id, "checkout-error_rate_spike-8");
                assert_eq!(*first_window_start, T0 + 5 * MIN);
                assert_eq!(*cleared_at, T0 + 10 * MIN);
            }
            other => panic!("expected resolved last, got {other:?}"),
        }
        assert_eq!(p.stats().suppressed_cooldown, 3);
    }

    #[test]
    fn steady_metrics_without_alerts_send_nothing() {
        let mut p = AlertPolicy::new(config());
        let mut sent = Vec::new();
        for minute in 0..100 {
            sent.extend(output(&mut p, minute, &["checkout", "cart"], &[], 0));
            sent.extend(p.poll(minute * MIN));
        }
        sent.extend(p.flush(0));
        assert!(sent.is_empty(), "{sent:?}");
    }

    #[test]
    fn resolution_waits_for_a_window_after_the_last_alert_even_if_metrics_come_first() {
        let mut p = AlertPolicy::new(config());
        // Metrics of the alert's own window arrive before the alert: not healthy.
        window(&mut p, "checkout", 3);
        p.on_alert(
            alert("checkout", "latency_p99_spike", 3, Severity::Warning),
            0,
        );
        let sent = p.settle(0);
        assert_eq!(firing_ids(&sent).len(), 1);
        assert!(resolved(&sent).is_empty());
        // Another service's healthy window does not resolve checkout.
        window(&mut p, "cart", 4);
        assert!(resolved(&p.settle(0)).is_empty());
        window(&mut p, "checkout", 4);
        assert_eq!(resolved(&p.settle(0)).len(), 1);
    }

    #[test]
    fn resolve_after_windows_needs_that_many_quiet_windows() {
        let mut p = AlertPolicy::new(PolicyConfig {
            resolve_after_windows: 3,
            ..config()
        });
        output(
            &mut p,
            0,
            &["api"],
            &[alert("api", "error_rate_spike", 0, Severity::Critical)],
            0,
        );
        assert!(resolved(&output(&mut p, 1, &["api"], &[], 0)).is_empty());
        assert!(resolved(&output(&mut p, 2, &["api"], &[], 0)).is_empty());
        // A new alert restarts the count.
        output(
            &mut p,
            3,
            &["api"],
            &[alert("api", "error_rate_spike", 3, Severity::Critical)],
            0,
        );
        assert!(resolved(&output(&mut p, 4, &["api"], &[], 0)).is_empty());
        assert!(resolved(&output(&mut p, 5, &["api"], &[], 0)).is_empty());
        assert_eq!(resolved(&output(&mut p, 6, &["api"], &[], 0)).len(), 1);
    }

    #[test]
    fn a_spike_longer_than_the_cooldown_sends_a_reminder() {
        let mut p = AlertPolicy::new(PolicyConfig {
            cooldown_s: 300,
            ..config()
        });
        let mut sent = Vec::new();
        for minute in 0..12 {
            let a = alert("api", "error_rate_spike", minute, Severity::Critical);
            sent.extend(output(&mut p, minute, &["api"], &[a], 0));
        }
        // Window ends at 1, 6, 11 minutes: every 5 minutes of event time.
        assert_eq!(
            firing_ids(&sent),
            vec![
                vec!["api-error_rate_spike-0".to_string()],
                vec!["api-error_rate_spike-5".to_string()],
                vec!["api-error_rate_spike-10".to_string()],
            ]
        );
    }

    #[test]
    fn flapping_within_the_cooldown_stays_quiet_and_is_not_resolved_twice() {
        let mut p = AlertPolicy::new(config());
        let mut sent = Vec::new();
        let spike = |m| vec![alert("api", "error_rate_spike", m, Severity::Critical)];
        sent.extend(output(&mut p, 0, &["api"], &spike(0), 0));
        sent.extend(output(&mut p, 1, &["api"], &[], 0));
        sent.extend(output(&mut p, 2, &["api"], &spike(2), 0));
        sent.extend(output(&mut p, 3, &["api"], &[], 0));
        assert_eq!(firing_ids(&sent).len(), 1, "{sent:?}");
        assert_eq!(resolved(&sent).len(), 1, "{sent:?}");
        // After the cooldown a new incident is announced again.
        sent.extend(output(&mut p, 20, &["api"], &spike(20), 0));
        assert_eq!(firing_ids(&sent).len(), 2);
    }

    #[test]
    fn services_firing_in_the_same_window_are_grouped() {
        let mut p = AlertPolicy::new(config());
        let alerts = vec![
            alert("checkout", "error_rate_spike", 7, Severity::Critical),
            alert("cart", "error_rate_spike", 7, Severity::Warning),
            alert("cart", "latency_p99_spike", 7, Severity::Warning),
        ];
        let sent = output(&mut p, 7, &["checkout", "cart"], &alerts, 0);
        assert_eq!(firing_ids(&sent).len(), 1);
        assert_eq!(firing_ids(&sent)[0].len(), 3);
        // The next window's alerts are a new group.
        let next = vec![alert("search", "error_rate_spike", 8, Severity::Critical)];
        let sent = output(&mut p, 8, &["search"], &next, 0);
        assert_eq!(firing_ids(&sent), vec![vec!["search-error_rate_spike-8"]]);
    }

    #[test]
    fn a_group_is_held_until_its_window_is_complete_then_released_by_event_or_wall_time() {
        let mut p = AlertPolicy::new(PolicyConfig {
            group_window_s: 300,
            ..config()
        });
        // Group bucket [10:00, 10:05): windows 0..5.
        let sent = output(
            &mut p,
            1,
            &["a"],
            &[alert("a", "error_rate_spike", 1, Severity::Critical)],
            0,
        );
        assert!(sent.is_empty());
        assert!(p.has_queued());
        let sent = output(
            &mut p,
            3,
            &["b"],
            &[alert("b", "error_rate_spike", 3, Severity::Critical)],
            0,
        );
        assert!(sent.is_empty());
        let sent = output(&mut p, 4, &["a", "b"], &[], 0);
        assert_eq!(firing_ids(&sent).len(), 1);
        assert_eq!(firing_ids(&sent)[0].len(), 2);

        // On a quiet stream the wall clock closes the group.
        p.on_alert(alert("c", "error_rate_spike", 6, Severity::Critical), 1_000);
        assert!(p.settle(1_000).is_empty());
        assert!(p.poll(1_000 + 299 * NS_PER_SEC).is_empty());
        assert_eq!(firing_ids(&p.poll(1_000 + 300 * NS_PER_SEC)).len(), 1);
    }

    #[test]
    fn below_min_severity_is_not_sent_but_keeps_an_incident_open() {
        let mut p = AlertPolicy::new(PolicyConfig {
            min_severity: Severity::Critical,
            ..config()
        });
        let warn = alert("api", "error_rate_spike", 0, Severity::Warning);
        assert_eq!(p.on_alert(warn, 0), Verdict::BelowMinSeverity);
        assert!(p.flush(0).is_empty());

        let mut sent = output(
            &mut p,
            1,
            &["api"],
            &[alert("api", "error_rate_spike", 1, Severity::Critical)],
            0,
        );
        // Still anomalous at warning level: not resolved.
        sent.extend(output(
            &mut p,
            2,
            &["api"],
            &[alert("api", "error_rate_spike", 2, Severity::Warning)],
            0,
        ));
        assert!(resolved(&sent).is_empty());
        sent.extend(output(&mut p, 3, &["api"], &[], 0));
        assert_eq!(firing_ids(&sent).len(), 1);
        assert_eq!(resolved(&sent).len(), 1);
        assert_eq!(p.stats().suppressed_severity, 2);
    }

    #[test]
    fn the_rate_limit_drops_messages_and_announces_the_count_in_the_next_one() {
        let mut p = AlertPolicy::new(PolicyConfig {
            max_messages_per_minute: 2,
            ..config()
        });
        let mut sent = Vec::new();
        for (i, service) in ["a", "b", "c", "d"].iter().enumerate() {
            let a = alert(service, "error_rate_spike", i as i64, Severity::Critical);
            sent.extend(output(&mut p, i as i64, &[service], &[a], 0));
        }
        assert_eq!(firing_ids(&sent).len(), 2);
        assert_eq!(p.stats().suppressed_rate_limit, 2);
        // The dropped incidents clear silently: their firing never went out.
        for (i, service) in ["a", "b", "c", "d"].iter().enumerate() {
            sent.extend(output(&mut p, 10 + i as i64, &[service], &[], 0));
        }
        assert_eq!(resolved(&sent).len(), 2);
        // A minute later there is room again, and the message says what was dropped.
        let a = alert("e", "error_rate_spike", 30, Severity::Critical);
        let next = output(&mut p, 30, &["e"], &[a], 61 * NS_PER_SEC);
        match &next[..] {
            [
                Notification::Firing {
                    rate_limited_before,
                    ..
                },
            ] => assert_eq!(*rate_limited_before, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_groups_are_split_into_messages_of_bounded_size() {
        let mut p = AlertPolicy::new(PolicyConfig {
            max_messages_per_minute: 100,
            ..config()
        });
        let services: Vec<String> = (0..45).map(|i| format!("svc{i:02}")).collect();
        let alerts: Vec<DataAlert> = services
            .iter()
            .map(|s| alert(s, "error_rate_spike", 0, Severity::Critical))
            .collect();
        let sent = output(&mut p, 0, &[], &alerts, 0);
        let sizes: Vec<usize> = firing_ids(&sent).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![20, 20, 5]);
    }

    fn condition(state: FailState, subject: &str) -> Condition {
        Condition {
            state,
            subject: subject.into(),
            context: "brokers unreachable for 30 s".into(),
            since: 5,
        }
    }

    #[test]
    fn a_fail_state_fires_once_and_resolves_once() {
        let mut p = AlertPolicy::new(config());
        let c = condition(FailState::KafkaUnavailable, "127.0.0.1:9092");
        let raised = p.on_fail_raised(c.clone(), 10);
        assert!(matches!(
            &raised[..],
            [Notification::FailRaised {
                reminder: false,
                severity: Severity::Critical,
                ..
            }]
        ));
        // Raised again (another part of the host noticing): nothing new.
        assert!(p.on_fail_raised(c.clone(), 20).is_empty());
        assert!(p.poll(30).is_empty());
        let cleared = p.on_fail_cleared(&c, 40);
        assert!(matches!(
            &cleared[..],
            [Notification::FailCleared { cleared_at: 40, .. }]
        ));
        assert!(p.on_fail_cleared(&c, 50).is_empty());
    }

    #[test]
    fn a_flapping_fail_state_is_announced_again_only_after_the_cooldown() {
        let mut p = AlertPolicy::new(PolicyConfig {
            cooldown_s: 60,
            ..config()
        });
        let c = condition(FailState::SinkUnavailable, "lake");
        assert_eq!(p.on_fail_raised(c.clone(), 0).len(), 1);
        assert_eq!(p.on_fail_cleared(&c, NS_PER_SEC).len(), 1);
        // Raised again 2 s later: within the cooldown, quiet.
        assert!(p.on_fail_raised(c.clone(), 2 * NS_PER_SEC).is_empty());
        assert!(p.poll(30 * NS_PER_SEC).is_empty());
        // Still active when the cooldown ends: announced then.
        let late = p.poll(60 * NS_PER_SEC);
        assert!(matches!(
            &late[..],
            [Notification::FailRaised {
                reminder: false,
                ..
            }]
        ));
        // Still active a cooldown later: a reminder.
        let again = p.poll(120 * NS_PER_SEC);
        assert!(matches!(
            &again[..],
            [Notification::FailRaised { reminder: true, .. }]
        ));
        assert_eq!(p.on_fail_cleared(&c, 130 * NS_PER_SEC).len(), 1);
    }

    #[test]
    fn a_flap_cleared_within_the_cooldown_sends_nothing() {
        let mut p = AlertPolicy::new(config());
        let c = condition(FailState::PluginFailing, "normalize");
        assert_eq!(p.on_fail_raised(c.clone(), 0).len(), 1);
        assert_eq!(p.on_fail_cleared(&c, 1).len(), 1);
        assert!(p.on_fail_raised(c.clone(), 2).is_empty());
        assert!(p.on_fail_cleared(&c, 3).is_empty());
        assert!(p.poll(10_000 * NS_PER_SEC).is_empty());
    }

    #[test]
    fn missing_files_are_occurrences_one_message_per_object_per_cooldown() {
        let mut p = AlertPolicy::new(config());
        let a = condition(FailState::S3MissingFile, "s3://lake/raw/a.gz");
        let b = condition(FailState::S3MissingFile, "s3://lake/raw/b.gz");
        assert_eq!(p.on_fail_raised(a.clone(), 0).len(), 1);
        assert!(p.on_fail_raised(a.clone(), 1).is_empty());
        assert_eq!(p.on_fail_raised(b.clone(), 2).len(), 1);
        // Never resolved, never reminded.
        assert!(p.poll(10_000 * NS_PER_SEC).is_empty());
        assert!(p.on_fail_cleared(&a, 3).is_empty());
        assert_eq!(p.on_fail_raised(a, 901 * NS_PER_SEC).len(), 1);
    }

    #[test]
    fn min_severity_applies_to_fail_states() {
        let mut p = AlertPolicy::new(PolicyConfig {
            min_severity: Severity::Critical,
            ..config()
        });
        let metrics = condition(FailState::MetricsGenerationFailed, "metrics");
        assert!(p.on_fail_raised(metrics.clone(), 0).is_empty());
        assert!(p.on_fail_cleared(&metrics, 1).is_empty());
        let kafka = condition(FailState::KafkaUnavailable, "k:9092");
        assert_eq!(p.on_fail_raised(kafka, 2).len(), 1);
    }

    #[test]
    fn replayed_alerts_do_not_fire_again() {
        let mut p = AlertPolicy::new(config());
        let a = alert("api", "error_rate_spike", 0, Severity::Critical);
        let mut sent = output(&mut p, 0, &["api"], std::slice::from_ref(&a), 0);
        sent.extend(output(&mut p, 0, &["api"], &[a], 0));
        assert_eq!(firing_ids(&sent).len(), 1);
    }
}
