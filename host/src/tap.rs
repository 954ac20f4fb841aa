//! Taps: a sample of the records passing a point of the pipeline, streamed as NDJSON to
//! whoever asked on the admin endpoint (`GET /tap`, `sluice tap`).
//!
//! Points: `route:<name>` (what is handed to that route's sinks, `route:cleaned` included),
//! `dlq` (dead letters with their reason), `plugin:<name>:in` and `plugin:<name>:out` (a
//! stage's input and what it emitted). With no tap attached a point costs one relaxed
//! atomic load. With one attached, each record at its point is encoded and filtered; at
//! most `rate` a second are sent, `limit` in all, into a bounded channel that drops (and
//! counts) what a slow client does not take.

use crate::Record;
use crate::batch::{Batch, PackedBatch};
use crate::codec;
use crate::event::DeadLetter;
use crate::event::Logs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// How many lines a client may fall behind before lines are dropped for it.
pub const CHANNEL_LINES: usize = 1024;

/// Where a tap is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    Route(String),
    Dlq,
    PluginIn(String),
    PluginOut(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "unknown tap point `{0}`: use route:<name>, dlq, plugin:<name>:in or plugin:<name>:out"
    )]
    Point(String),
    #[error(
        "cannot read filter clause `{0}`: use field=value, field!=value or field~text, joined with &&"
    )]
    Filter(String),
}

impl std::str::FromStr for Point {
    type Err = TapError;
    fn from_str(s: &str) -> Result<Point, TapError> {
        let bad = || TapError::Point(s.to_owned());
        if s == "dlq" {
            return Ok(Point::Dlq);
        }
        if let Some(route) = s.strip_prefix("route:") {
            return (!route.is_empty())
                .then(|| Point::Route(route.to_owned()))
                .ok_or_else(bad);
        }
        let plugin = s.strip_prefix("plugin:").ok_or_else(bad)?;
        match plugin.rsplit_once(':') {
            Some((name, "in")) if !name.is_empty() => Ok(Point::PluginIn(name.to_owned())),
            Some((name, "out")) if !name.is_empty() => Ok(Point::PluginOut(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// Clauses every tapped record must match, on its top-level JSON fields.
#[derive(Debug, Clone, Default)]
pub struct Filter(Vec<(String, Op, String)>);

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Contains,
}

impl std::str::FromStr for Filter {
    type Err = TapError;
    fn from_str(s: &str) -> Result<Filter, TapError> {
        let mut clauses = Vec::new();
        for clause in s.split("&&").map(str::trim).filter(|c| !c.is_empty()) {
            let parsed = [("!=", Op::Ne), ("=", Op::Eq), ("~", Op::Contains)]
                .into_iter()
                .find_map(|(sep, op)| {
                    let (k, v) = clause.split_once(sep)?;
                    Some((k.trim().to_owned(), op, v.trim().to_owned()))
                });
            match parsed {
                Some((k, op, v)) if !k.is_empty() => clauses.push((k, op, v)),
                _ => return Err(TapError::Filter(clause.to_owned())),
            }
        }
        Ok(Filter(clauses))
    }
}

impl Filter {
    fn matches(&self, line: &[u8]) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(line) else {
            return false;
        };
        self.0.iter().all(|(key, op, want)| {
            let have = match fields.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
                None => None,
            };
            match (op, have) {
                (Op::Eq, Some(h)) => h == *want,
                (Op::Ne, h) => h.as_deref() != Some(want.as_str()),
                (Op::Contains, Some(h)) => h.contains(want.as_str()),
                _ => false,
            }
        })
    }
}

/// What a client asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub point: Point,
    pub filter: Filter,
    /// Lines a second at most.
    pub rate: u32,
    /// Lines in all; the stream ends after them.
    pub limit: u64,
}

struct Subscriber {
    request: Request,
    tx: mpsc::Sender<Vec<u8>>,
    sent: u64,
    /// Token bucket: lines that may go now, refilled at `rate` a second.
    tokens: f64,
    refilled: Instant,
    dropped: Arc<AtomicU64>,
}

impl Subscriber {
    /// Refill the token bucket for the time passed; whether a line may go now.
    fn has_tokens(&mut self) -> bool {
        let now = Instant::now();
        let rate = f64::from(self.request.rate.max(1));
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        self.tokens >= 1.0
    }

    /// Offer one encoded line; false once this subscriber is done (limit, client gone).
    fn offer(&mut self, line: &[u8]) -> bool {
        if !self.request.filter.matches(line) {
            return true;
        }
        if !self.has_tokens() {
            return true;
        }
        self.tokens -= 1.0;
        let mut out = line.to_vec();
        out.push(b'\n');
        match self.tx.try_send(out) {
            Ok(()) => {
                self.sent += 1;
                self.sent < self.request.limit
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Every tap attached in this process.
#[derive(Default)]
pub struct Taps {
    attached: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
}

/// The process's taps, shared by the pipeline and the admin endpoint.
pub fn global() -> &'static Taps {
    static TAPS: OnceLock<Taps> = OnceLock::new();
    TAPS.get_or_init(Taps::default)
}

/// A tap's stream: its lines and how many were dropped for a slow client.
pub struct Attached {
    pub lines: mpsc::Receiver<Vec<u8>>,
    pub dropped: Arc<AtomicU64>,
}

impl Taps {
    pub fn attach(&self, request: Request) -> Attached {
        let (tx, lines) = mpsc::channel(CHANNEL_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subscribers = self.lock();
        subscribers.push(Subscriber {
            tokens: f64::from(request.rate.max(1)),
            request,
            tx,
            sent: 0,
            refilled: Instant::now(),
            dropped: dropped.clone(),
        });
        self.attached.store(subscribers.len(), Ordering::Release);
        Attached { lines, dropped }
    }

    /// Whether any tap is attached: the hot path's only cost without one.
    #[inline]
    pub fn active(&self) -> bool {
        self.attached.load(Ordering::Relaxed) > 0
    }

    /// How many taps are attached.
    pub fn attached(&self) -> usize {
        self.attached.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offer the lines `encode` writes to every subscriber at `point`. Nothing is encoded
    /// while no subscriber there may take a line (its rate used up), and encoding stops
    /// once none may take more: a rate-limited tap costs about its rate, not the traffic.
    fn offer(
        &self,
        point: impl Fn(&Point) -> bool,
        encode: impl Fn(&mut dyn FnMut(&[u8]) -> bool),
    ) {
        let mut subscribers = self.lock();
        let mut wanted = false;
        for s in subscribers.iter_mut().filter(|s| point(&s.request.point)) {
            wanted |= s.has_tokens();
        }
        if !wanted {
            return;
        }
        let mut done = vec![false; subscribers.len()];
        encode(&mut |line| {
            let mut more = false;
            for (s, done) in subscribers.iter_mut().zip(done.iter_mut()) {
                if !*done && point(&s.request.point) {
                    *done = !s.offer(line);
                    more |= !*done && s.tokens >= 1.0;
                }
            }
            more
        });
        let mut flags = done.into_iter();
        subscribers.retain(|_| !flags.next().unwrap_or(false));
        // Closed clients are noticed here too, when their point sees records.
        subscribers.retain(|s| !s.tx.is_closed());
        self.attached.store(subscribers.len(), Ordering::Release);
    }

    /// Records handed to `route`.
    pub fn route(&self, route: &str, logs: &Logs) {
        self.offer(
            |p| matches!(p, Point::Route(r) if r == route),
            |emit| match logs.packed() {
                Some(packed) => each_packed(packed, emit),
                None => each_record(logs.records(), emit),
            },
        );
    }

    /// Dead letters on their way to `dlq`.
    pub fn dead_letters(&self, letters: &[DeadLetter]) {
        self.offer(
            |p| *p == Point::Dlq,
            |emit| {
                for d in letters {
                    let line = serde_json::json!({
                        "reason": d.reason,
                        "origin.topic": d.origin.topic,
                        "origin.partition": d.origin.partition,
                        "origin.offset": d.origin.offset,
                        "payload": String::from_utf8_lossy(&d.payload),
                    });
                    if !emit(line.to_string().as_bytes()) {
                        return;
                    }
                }
            },
        );
    }

    /// A stage's input (`output` false) or what it emitted.
    pub fn stage(&self, stage: &str, output: bool, batch: &Batch) {
        self.offer(
            |p| match p {
                Point::PluginIn(name) => !output && name == stage,
                Point::PluginOut(name) => output && name == stage,
                _ => false,
            },
            |emit| match batch {
                Batch::Packed(packed) => each_packed(packed, emit),
                Batch::Records(records) => each_record(records, emit),
            },
        );
    }
}

/// Encode records one by one until `emit` wants no more.
fn each_record(records: &[Record], emit: &mut dyn FnMut(&[u8]) -> bool) {
    let mut buf = Vec::with_capacity(512);
    for record in records {
        buf.clear();
        codec::encode_record(record, &mut buf);
        if !emit(&buf) {
            return;
        }
    }
}

/// [`each_record`] reading a packed batch in place: nothing is decoded for the tap.
fn each_packed(packed: &PackedBatch, emit: &mut dyn FnMut(&[u8]) -> bool) {
    let mut buf = Vec::with_capacity(512);
    for record in packed.view().iter() {
        buf.clear();
        codec::encode_view(&record, &mut buf);
        if !emit(&buf) {
            return;
        }
    }
}

/// Why `sluice tap` could not stream.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the admin endpoint at {admin}: {source}. Is the host running, and is `admin.listen` this address?"
    )]
    Connect {
        admin: String,
        source: reqwest::Error,
    },
    #[error("the admin endpoint refused the tap ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("the stream from {admin} broke: {source}")]
    Stream {
        admin: String,
        source: reqwest::Error,
    },
    #[error("cannot write the records: {0}")]
    Write(#[from] std::io::Error),
}

/// What `sluice tap` asks a host for.
pub struct ClientRequest<'a> {
    /// The admin endpoint, `host:port` or a URL.
    pub admin: &'a str,
    pub point: &'a str,
    pub filter: Option<&'a str>,
    pub rate: u32,
    pub limit: u64,
    pub token: Option<&'a str>,
    /// A CA to trust besides the public ones (`--ca-file`).
    pub ca: Option<&'a reqwest::Certificate>,
}

/// Stream a running host's tap to `out`, line by line; returns the lines written.
pub async fn stream(
    request: &ClientRequest<'_>,
    out: &mut impl std::io::Write,
) -> Result<u64, ClientError> {
    let base = if request.admin.contains("://") {
        request.admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", request.admin)
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("point", request.point);
    if let Some(filter) = request.filter {
        query.append_pair("filter", filter);
    }
    query.append_pair("rate", &request.rate.to_string());
    query.append_pair("limit", &request.limit.to_string());
    let mut http = reqwest::Client::builder();
    if let Some(ca) = request.ca {
        http = http.add_root_certificate(ca.clone());
    }
    let http = http.build().map_err(|source| ClientError::Connect {
        admin: request.admin.to_owned(),
        source,
    })?;
    let mut call = http.get(format!("{base}/tap?{}", query.finish()));
    if let Some(token) = request.token {
        call = call.bearer_auth(token);
    }
    let connect = |source| ClientError::Connect {
        admin: request.admin.to_owned(),
        source,
    };
    let mut response = call.send().await.map_err(connect)?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        return Err(ClientError::Refused {
            status,
            body: body.trim().to_owned(),
        });
    }
    let mut lines = 0;
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|source| ClientError::Stream {
                admin: request.admin.to_owned(),
                source,
            })?;
        let Some(chunk) = chunk else {
            return Ok(lines);
        };
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        out.write_all(&chunk)?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service: &str) -> Record {
        let mut r = Record::new(crate::Origin {
            topic: "raw".into(),
            partition: 0,
            offset: 0,
        });
        r.body = format!("hello from {service}");
        r.set("service", service);
        r
    }

    fn request(point: &str, filter: &str, rate: u32, limit: u64) -> Request {
        Request {
            point: point.parse().unwrap(),
            filter: filter.parse().unwrap(),
            rate,
            limit,
        }
    }

    #[test]
    fn points_and_filters_parse_or_say_what_is_accepted() {
        assert_eq!("dlq".parse::<Point>().unwrap(), Point::Dlq);
        assert_eq!(
            "plugin:a:b:out".parse::<Point>().unwrap(),
            Point::PluginOut("a:b".into())
        );
        for bad in ["route:", "plugin:x", "plugin::in", "sink:s3"] {
            let e = bad.parse::<Point>().unwrap_err().to_string();
            assert!(e.contains("route:<name>"), "{bad}: {e}");
        }
        assert!("service".parse::<Filter>().is_err());
        let f: Filter = "service!=api && message~from".parse().unwrap();
        assert!(f.matches(br#"{"service":"web","message":"hello from web"}"#));
        assert!(!f.matches(br#"{"service":"api","message":"hello from api"}"#));
    }

    #[test]
    fn a_slow_client_loses_lines_beyond_the_channel_and_a_gone_one_detaches() {
        let taps = Taps::default();
        let mut attached = taps.attach(request("route:cleaned", "service=api", 1_000_000, 10_000));
        assert!(taps.active());
        let records: Vec<Record> = (0..6000)
            .map(|i| record(if i % 3 == 0 { "api" } else { "web" }))
            .collect();
        taps.route("other", &Logs::from(records.clone()));
        assert!(
            attached.lines.try_recv().is_err(),
            "another route's records"
        );
        taps.route("cleaned", &Logs::from(records.clone()));
        let mut got = 0;
        while attached.lines.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, CHANNEL_LINES);
        assert_eq!(
            attached.dropped.load(Ordering::Relaxed),
            2000 - CHANNEL_LINES as u64
        );
        drop(attached);
        taps.route("cleaned", &Logs::from(records[..1].to_vec()));
        assert!(!taps.active());
    }

    #[test]
    fn the_limit_ends_the_stream_and_the_rate_holds_back_the_rest() {
        let taps = Taps::default();
        let mut limited = taps.attach(request("route:cleaned", "", 1_000_000, 5));
        let mut slow = taps.attach(request("route:cleaned", "", 3, 1000));
        taps.route("cleaned", &Logs::from(vec![record("api"); 100]));
        let mut n = 0;
        while limited.lines.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 5);
        assert!(limited.lines.is_closed(), "detached after its limit");
        let mut n = 0;
        while slow.lines.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 3, "a full bucket of 3, no more within the same instant");
        assert_eq!(taps.attached(), 1);
    }

    #[test]
    fn a_rate_limited_tap_stops_encoding_once_its_rate_is_used_up() {
        let taps = Taps::default();
        let _slow = taps.attach(request("route:cleaned", "", 3, 1000));
        let encoded = std::cell::Cell::new(0);
        let batch = |taps: &Taps| {
            taps.offer(
                |p| matches!(p, Point::Route(r) if r == "cleaned"),
                |emit| {
                    for _ in 0..10_000 {
                        encoded.set(encoded.get() + 1);
                        if !emit(b"{}") {
                            return;
                        }
                    }
                },
            )
        };
        batch(&taps);
        assert_eq!(
            encoded.get(),
            3,
            "three lines may go: three encoded, not 10,000"
        );
        batch(&taps);
        assert!(
            encoded.get() <= 4,
            "{} encoded with the rate used up",
            encoded.get()
        );
    }
}
