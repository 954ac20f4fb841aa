//! `sluice top`: a live view of a running host over its admin endpoint.
//!
//! The model here is plain data: [`Scrape`] parses a `/metrics` page, [`Snapshot`] picks
//! out what the view shows, and [`View`] turns two snapshots into rates over the time
//! between them (counter deltas, a p99 from the histogram buckets' deltas). [`draw`] lays
//! a view out with ratatui and [`term`] runs the terminal; neither computes anything.

pub mod draw;
pub mod term;

use std::time::{Duration, Instant};

/// One sample of a `/metrics` page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        (self.labels.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Samples of the text format; comments and lines it cannot read are skipped.
    pub fn parse(text: &str) -> Scrape {
        Scrape(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(parse_line)
                .collect(),
        )
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// The value of an unlabelled series (0 when absent).
    fn value(&self, name: &str) -> f64 {
        self.all(name).next().map_or(0.0, |s| s.value)
    }

    /// The value of `name` whose label `key` is `value` (0 when absent).
    fn labelled(&self, name: &str, key: &str, value: &str) -> f64 {
        self.all(name)
            .find(|s| s.label(key) == Some(value))
            .map_or(0.0, |s| s.value)
    }

    /// The values of label `key` on `name`, in the order the page lists them.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for s in self.all(name) {
            if let Some(v) = s.label(key)
                && !seen.iter().any(|x| x == v)
            {
                seen.push(v.to_owned());
            }
        }
        seen
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some(Sample {
            name: series.to_owned(),
            labels: Vec::new(),
            value,
        });
    };
    Some(Sample {
        name: name.to_owned(),
        labels: parse_labels(rest.strip_suffix('}')?)?,
        value,
    })
}

/// `k="v",k2="v2"` with the format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// A plugin stage's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageCounters {
    pub name: String,
    pub records_in: f64,
    pub records_out: f64,
    /// Calls that trapped, timed out, ran out of memory or returned an error.
    pub failed_calls: f64,
    /// Records dead-lettered for claiming an origin the stage was never given.
    pub foreign_origins: f64,
    pub memory_bytes: f64,
    /// The call-duration histogram: (upper bound in seconds, cumulative count), `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

/// A sink's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkCounters {
    pub name: String,
    pub sent: f64,
    pub acknowledged: f64,
    pub retried: f64,
    pub dead_lettered: f64,
    pub in_flight_bytes: f64,
}

/// One assigned source partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionRow {
    pub topic: String,
    pub partition: i32,
    pub lag: Option<i64>,
    pub committed: Option<i64>,
}

/// An active fail state as `/readyz` names it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Condition {
    pub state: String,
    pub subject: String,
    pub context: String,
}

/// What one look at the admin endpoint saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub consumed: f64,
    pub processed: f64,
    pub routed: f64,
    pub decode_rejected: f64,
    pub plugin_dead_lettered: f64,
    pub unrouted: f64,
    pub resident_bytes: f64,
    pub ready: bool,
    pub stages: Vec<StageCounters>,
    pub sinks: Vec<SinkCounters>,
    pub partitions: Vec<PartitionRow>,
    pub conditions: Vec<Condition>,
}

impl Snapshot {
    /// The view's numbers out of a `/metrics` page and `/readyz`'s conditions.
    pub fn from_scrape(scrape: &Scrape, conditions: Vec<Condition>, at: Instant) -> Snapshot {
        Snapshot {
            at,
            consumed: scrape.value("sluice_source_consumed_total"),
            processed: scrape.value("sluice_pipeline_records_total"),
            routed: scrape.value("sluice_pipeline_routed_total"),
            decode_rejected: scrape.value("sluice_pipeline_decode_rejected_total"),
            plugin_dead_lettered: scrape.value("sluice_pipeline_plugin_dead_lettered_total"),
            unrouted: scrape.value("sluice_pipeline_unrouted_total"),
            resident_bytes: scrape.value("process_resident_memory_bytes"),
            ready: scrape.value("sluice_ready") > 0.0,
            stages: stages(scrape),
            sinks: sinks(scrape),
            partitions: partitions(scrape),
            conditions,
        }
    }

    /// Dead letters of every kind: undecodable, from plugins, from sinks.
    pub fn dead_letters(&self) -> f64 {
        self.decode_rejected
            + self.plugin_dead_lettered
            + self.sinks.iter().map(|s| s.dead_lettered).sum::<f64>()
    }
}

fn stages(scrape: &Scrape) -> Vec<StageCounters> {
    let names = scrape.label_values("sluice_plugin_records_in_total", "plugin");
    (names.into_iter())
        .map(|name| {
            let get = |metric: &str| scrape.labelled(metric, "plugin", &name);
            let failed_calls = [
                "sluice_plugin_traps_total",
                "sluice_plugin_timeouts_total",
                "sluice_plugin_out_of_memory_total",
                "sluice_plugin_errors_total",
            ]
            .iter()
            .map(|m| get(m))
            .sum();
            let buckets = (scrape.all("sluice_plugin_call_seconds_bucket"))
                .filter(|s| s.label("plugin") == Some(name.as_str()))
                .filter_map(|s| {
                    let le = s.label("le")?;
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((bound, s.value))
                })
                .collect();
            StageCounters {
                records_in: get("sluice_plugin_records_in_total"),
                records_out: get("sluice_plugin_records_out_total"),
                failed_calls,
                foreign_origins: get("sluice_plugin_foreign_origins_total"),
                memory_bytes: get("sluice_plugin_memory_bytes"),
                buckets,
                name,
            }
        })
        .collect()
}

fn sinks(scrape: &Scrape) -> Vec<SinkCounters> {
    let names = scrape.label_values("sluice_sink_sent_total", "sink");
    (names.into_iter())
        .map(|name| {
            let get = |metric: &str| scrape.labelled(metric, "sink", &name);
            SinkCounters {
                sent: get("sluice_sink_sent_total"),
                acknowledged: get("sluice_sink_acknowledged_total"),
                retried: get("sluice_sink_retried_total"),
                dead_lettered: get("sluice_sink_dead_lettered_total"),
                in_flight_bytes: get("sluice_sink_in_flight_bytes"),
                name,
            }
        })
        .collect()
}

fn partitions(scrape: &Scrape) -> Vec<PartitionRow> {
    let mut rows: Vec<PartitionRow> = Vec::new();
    for (metric, is_lag) in [
        ("sluice_source_lag", true),
        ("sluice_source_committed_offset", false),
    ] {
        for s in scrape.all(metric) {
            let (Some(topic), Some(partition)) = (
                s.label("topic"),
                s.label("partition").and_then(|p| p.parse().ok()),
            ) else {
                continue;
            };
            let row = match rows
                .iter_mut()
                .position(|r| r.topic == topic && r.partition == partition)
            {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(PartitionRow {
                        topic: topic.to_owned(),
                        partition,
                        lag: None,
                        committed: None,
                    });
                    rows.last_mut().expect("just pushed")
                }
            };
            let value = Some(s.value as i64);
            if is_lag {
                row.lag = value;
            } else {
                row.committed = value;
            }
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    rows
}

/// A stage's row: rates over the interval, totals since the host started.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRow {
    pub name: String,
    pub in_per_s: Option<f64>,
    pub out_per_s: Option<f64>,
    pub failed_calls: u64,
    pub foreign_origins: u64,
    /// Over the interval's calls (since start on the first look); `None` without calls.
    pub p99_seconds: Option<f64>,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkRow {
    pub name: String,
    pub sent_per_s: Option<f64>,
    pub acked_per_s: Option<f64>,
    pub retried: u64,
    pub dead_lettered: u64,
    pub in_flight_bytes: u64,
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Seconds between the two looks the rates come from; `None` on the first look.
    pub interval: Option<f64>,
    pub consumed_per_s: Option<f64>,
    pub processed_per_s: Option<f64>,
    pub routed_per_s: Option<f64>,
    pub dead_letters: u64,
    pub dead_letters_per_s: Option<f64>,
    pub unrouted: u64,
    pub resident_bytes: u64,
    pub ready: bool,
    pub stages: Vec<StageRow>,
    pub sinks: Vec<SinkRow>,
    pub partitions: Vec<PartitionRow>,
    pub conditions: Vec<Condition>,
}

impl View {
    /// The view of `now`, with rates from `before` when there is one.
    pub fn new(before: Option<&Snapshot>, now: &Snapshot) -> View {
        let interval = before
            .map(|b| now.at.saturating_duration_since(b.at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let rate = |then: Option<f64>, value: f64| -> Option<f64> {
            let (then, seconds) = (then?, interval?);
            // A host that restarted starts its counters again from 0.
            let delta = if value >= then { value - then } else { value };
            Some(delta / seconds)
        };
        let stages = (now.stages.iter())
            .map(|s| {
                let b = before.and_then(|b| b.stages.iter().find(|x| x.name == s.name));
                StageRow {
                    name: s.name.clone(),
                    in_per_s: rate(b.map(|b| b.records_in), s.records_in),
                    out_per_s: rate(b.map(|b| b.records_out), s.records_out),
                    failed_calls: s.failed_calls as u64,
                    foreign_origins: s.foreign_origins as u64,
                    p99_seconds: quantile(0.99, &bucket_delta(b.map(|b| &b.buckets), &s.buckets)),
                    memory_bytes: s.memory_bytes as u64,
                }
            })
            .collect();
        let sinks = (now.sinks.iter())
            .map(|s| {
                let b = before.and_then(|b| b.sinks.iter().find(|x| x.name == s.name));
                SinkRow {
                    name: s.name.clone(),
                    sent_per_s: rate(b.map(|b| b.sent), s.sent),
                    acked_per_s: rate(b.map(|b| b.acknowledged), s.acknowledged),
                    retried: s.retried as u64,
                    dead_lettered: s.dead_lettered as u64,
                    in_flight_bytes: s.in_flight_bytes as u64,
                }
            })
            .collect();
        View {
            interval,
            consumed_per_s: rate(before.map(|b| b.consumed), now.consumed),
            processed_per_s: rate(before.map(|b| b.processed), now.processed),
            routed_per_s: rate(before.map(|b| b.routed), now.routed),
            dead_letters: now.dead_letters() as u64,
            dead_letters_per_s: rate(before.map(Snapshot::dead_letters), now.dead_letters()),
            unrouted: now.unrouted as u64,
            resident_bytes: now.resident_bytes as u64,
            ready: now.ready,
            stages,
            sinks,
            partitions: now.partitions.clone(),
            conditions: now.conditions.clone(),
        }
    }
}

/// The histogram of the calls between two looks: `now` less `before` bucket by bucket
/// (`now` alone on the first look or after a restart).
fn bucket_delta(before: Option<&Vec<(f64, f64)>>, now: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let Some(before) = before.filter(|b| b.len() == now.len()) else {
        return now.to_vec();
    };
    if now.iter().zip(before).any(|(n, b)| n.1 < b.1) {
        return now.to_vec();
    }
    (now.iter().zip(before))
        .map(|(n, b)| (n.0, n.1 - b.1))
        .collect()
}

/// The `q` quantile of a cumulative histogram, interpolated within its bucket as
/// Prometheus' `histogram_quantile` does; the largest finite bound when it falls in `+Inf`.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let within = cumulative - below;
            let share = if within > 0.0 {
                (rank - below) / within
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        (lower, below) = (bound, cumulative);
    }
    Some(lower)
}

/// Why a look at the admin endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot reach the admin endpoint at {admin}: {reason}. Is the host running, and is its `admin.listen` this address? Give another with --admin HOST:PORT."
    )]
    Unreachable { admin: String, reason: String },
    #[error(
        "the admin endpoint at {admin} asks for a token: give it with --token or SLUICE_ADMIN_TOKEN (`admin.token` in the host's config)"
    )]
    Unauthorized { admin: String },
    #[error("the admin endpoint at {admin} answered {status} on {path}: {body}")]
    Status {
        admin: String,
        path: &'static str,
        status: u16,
        body: String,
    },
}

/// Reads `/metrics` and `/readyz` of one host.
pub struct Client {
    admin: String,
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of `admin` (`host:port` or a URL); each look gives up after `timeout`.
    pub fn new(
        admin: &str,
        token: Option<String>,
        timeout: Duration,
        ca: Option<reqwest::Certificate>,
    ) -> Client {
        let base = if admin.contains("://") {
            admin.trim_end_matches('/').to_owned()
        } else {
            format!("http://{admin}")
        };
        let mut http = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = ca {
            http = http.add_root_certificate(ca);
        }
        let http = http.build().unwrap_or_default();
        Client {
            admin: admin.to_owned(),
            base,
            token,
            http,
        }
    }

    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// One look: both pages, read when they arrive.
    pub async fn fetch(&self) -> Result<Snapshot, FetchError> {
        let metrics = self.get("/metrics", true).await?;
        let readyz = self.get("/readyz", true).await?;
        let conditions = serde_json::from_str::<serde_json::Value>(&readyz)
            .ok()
            .and_then(|v| serde_json::from_value(v["conditions"].clone()).ok())
            .unwrap_or_default();
        Ok(Snapshot::from_scrape(
            &Scrape::parse(&metrics),
            conditions,
            Instant::now(),
        ))
    }

    async fn get(&self, path: &'static str, guarded: bool) -> Result<String, FetchError> {
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            admin: self.admin.clone(),
            reason: reason(&e),
        };
        let mut call = self.http.get(format!("{}{path}", self.base));
        if let (true, Some(token)) = (guarded, &self.token) {
            call = call.bearer_auth(token);
        }
        let response = call.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(unreachable)?;
        // /readyz answers 503 with its conditions while the host is not ready.
        match status {
            200 => Ok(body),
            503 if path == "/readyz" => Ok(body),
            401 => Err(FetchError::Unauthorized {
                admin: self.admin.clone(),
            }),
            _ => Err(FetchError::Status {
                admin: self.admin.clone(),
                path,
                status,
                body: body.trim().chars().take(200).collect(),
            }),
        }
    }
}

/// The innermost cause of a request's failure ("Connection refused"), which is what
/// tells an operator what to do; reqwest's own message is only "error sending request".
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests;
