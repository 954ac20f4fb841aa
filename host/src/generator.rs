//! `sluice gen`: a seeded generator of realistic multi-service application logs.
//!
//! Mostly JSON lines (ts, level, service, host, msg, trace/span ids, HTTP fields, duration,
//! event id), some logfmt and plain text lines, exact duplicates at a configurable ratio
//! (a producer retrying), and error bursts for one service over a span of event time. Event
//! time advances at `events_per_second` from `start`, independent of how fast lines are
//! sent, so the same seed gives the same stream — and the same metrics — every time.

use crate::time;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// An error burst: `service` fails `error_ratio` of its requests, slowly, for `duration_s`
/// seconds of event time starting `start_s` seconds after the stream's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    pub service: String,
    pub start_s: f64,
    pub duration_s: f64,
    pub error_ratio: f64,
}

impl std::str::FromStr for Burst {
    type Err = String;

    /// `SERVICE@START+DURATION[:RATIO]`, seconds of event time, e.g. `checkout@600+120:0.5`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "`{s}`: expected SERVICE@START_S+DURATION_S[:ERROR_RATIO], e.g. checkout@600+120:0.5"
            )
        };
        let (service, rest) = s.split_once('@').ok_or_else(usage)?;
        let (span, ratio) = rest.split_once(':').unwrap_or((rest, "0.5"));
        let (start, duration) = span.split_once('+').ok_or_else(usage)?;
        let burst = Burst {
            service: service.to_owned(),
            start_s: start.parse().map_err(|_| usage())?,
            duration_s: duration.parse().map_err(|_| usage())?,
            error_ratio: ratio.parse().map_err(|_| usage())?,
        };
        if service.is_empty() || !(0.0..=1.0).contains(&burst.error_ratio) {
            return Err(usage());
        }
        Ok(burst)
    }
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub seed: u64,
    /// Event time of the first line, ns since the epoch.
    pub start_ns: i64,
    /// Lines per second of event time.
    pub events_per_second: f64,
    /// Share of lines that repeat the previous line exactly.
    pub duplicate_ratio: f64,
    /// Share of lines written as logfmt and as plain text (the rest is JSON).
    pub logfmt_ratio: f64,
    pub plain_ratio: f64,
    pub bursts: Vec<Burst>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 1,
            start_ns: time::now_ns(),
            events_per_second: 100.0,
            duplicate_ratio: 0.01,
            logfmt_ratio: 0.05,
            plain_ratio: 0.03,
            bursts: Vec::new(),
        }
    }
}

struct Service {
    name: &'static str,
    routes: &'static [(&'static str, &'static str)],
    /// Median latency in ms.
    latency_ms: f64,
    messages: &'static [&'static str],
    failures: &'static [&'static str],
}

const SERVICES: &[Service] = &[
    Service {
        name: "checkout",
        routes: &[("POST", "/api/checkout"), ("GET", "/api/cart")],
        latency_ms: 45.0,
        messages: &["order placed", "cart loaded", "checkout started"],
        failures: &["payment gateway timeout", "order validation failed"],
    },
    Service {
        name: "payments",
        routes: &[("POST", "/v1/charges"), ("POST", "/v1/refunds")],
        latency_ms: 80.0,
        messages: &["charge authorised", "refund issued", "card tokenised"],
        failures: &["card declined by issuer", "upstream 503 from acquirer"],
    },
    Service {
        name: "inventory",
        routes: &[("GET", "/stock"), ("PUT", "/stock/reserve")],
        latency_ms: 12.0,
        messages: &["stock reserved", "stock level read"],
        failures: &["reservation conflict", "database deadlock detected"],
    },
    Service {
        name: "search",
        routes: &[("GET", "/search"), ("GET", "/suggest")],
        latency_ms: 25.0,
        messages: &["query served", "suggestions served"],
        failures: &["index shard unavailable", "query parse error"],
    },
    Service {
        name: "auth",
        routes: &[("POST", "/login"), ("POST", "/token/refresh")],
        latency_ms: 18.0,
        messages: &["user logged in", "token refreshed"],
        failures: &["invalid credentials", "token signature mismatch"],
    },
    Service {
        name: "frontend",
        routes: &[("GET", "/"), ("GET", "/product"), ("GET", "/static/app.js")],
        latency_ms: 8.0,
        messages: &["page rendered", "asset served"],
        failures: &["template render failed", "upstream connect error"],
    },
];

/// One generated line and its Kafka key (the service).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub key: String,
    pub text: String,
    /// Event time of the line, ns since the epoch.
    pub event_time: i64,
    /// Whether it repeats the previous line.
    pub duplicate: bool,
}

pub struct Generator {
    rng: SmallRng,
    options: GenOptions,
    index: u64,
    previous: Option<Line>,
}

impl Generator {
    pub fn new(options: GenOptions) -> Generator {
        Generator {
            rng: SmallRng::seed_from_u64(options.seed),
            options,
            index: 0,
            previous: None,
        }
    }

    fn burst_for(&self, service: &str, offset_s: f64) -> Option<&Burst> {
        self.options.bursts.iter().find(|b| {
            b.service == service && offset_s >= b.start_s && offset_s < b.start_s + b.duration_s
        })
    }

    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    }
}

impl Iterator for Generator {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        if let Some(prev) = &self.previous
            && self
                .rng
                .random_bool(self.options.duplicate_ratio.clamp(0.0, 1.0))
        {
            let mut dup = prev.clone();
            dup.duplicate = true;
            self.previous = Some(dup.clone());
            return Some(dup);
        }
        let offset_s = self.index as f64 / self.options.events_per_second.max(1e-9);
        let event_time = self.options.start_ns + (offset_s * 1e9) as i64;
        self.index += 1;

        let service = &SERVICES[self.rng.random_range(0..SERVICES.len())];
        // The order of the random draws below is the corpus: a seed gives the same lines.
        let event = self.event(service, offset_s);
        let text = self.render(service, &event, &time::rfc3339_millis(event_time));
        let line = Line {
            key: service.name.to_owned(),
            text,
            event_time,
            duplicate: false,
        };
        self.previous = Some(line.clone());
        Some(line)
    }
}

/// One generated request, before it is written in one of the formats.
struct Event {
    level: &'static str,
    status: u16,
    latency: f64,
    method: &'static str,
    path: &'static str,
    msg: &'static str,
    host: String,
    trace: String,
    span: String,
    event_id: String,
}

impl Generator {
    /// What `service` did at `offset_s` seconds of event time: errors and latency follow
    /// the configured bursts.
    fn event(&mut self, service: &Service, offset_s: f64) -> Event {
        let burst = self.burst_for(service.name, offset_s).cloned();
        let error_ratio = burst.as_ref().map_or(0.004, |b| b.error_ratio);
        let failed = self.rng.random_bool(error_ratio);
        let warn = !failed && self.rng.random_bool(0.03);
        // Log-normal latency around the service's median; bursts are slow too.
        let normal: f64 = {
            let u1: f64 = self.rng.random_range(1e-12..1.0);
            let u2: f64 = self.rng.random();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let mut latency = service.latency_ms * (0.35 * normal).exp();
        if burst.is_some() {
            latency *= 6.0;
        }
        let (method, path) = service.routes[self.rng.random_range(0..service.routes.len())];
        let (level, status) = if failed {
            ("error", [500, 502, 503][self.rng.random_range(0..3)])
        } else if warn {
            ("warn", [404, 429][self.rng.random_range(0..2)])
        } else {
            ("info", 200)
        };
        let msg = if failed {
            service.failures[self.rng.random_range(0..service.failures.len())]
        } else {
            service.messages[self.rng.random_range(0..service.messages.len())]
        };
        Event {
            level,
            status,
            latency,
            method,
            path,
            msg,
            host: format!("{}-{}", service.name, self.rng.random_range(1..=4)),
            trace: self.hex(32),
            span: self.hex(16),
            event_id: self.hex(20),
        }
    }

    /// The event as a plain, logfmt or JSON line, in the configured shares.
    fn render(&mut self, service: &Service, e: &Event, ts: &str) -> String {
        let Event {
            level,
            status,
            latency,
            method,
            path,
            msg,
            ..
        } = e;
        let (host, trace) = (&e.host, &e.trace);
        let pick: f64 = self.rng.random();
        if pick < self.options.plain_ratio {
            return format!(
                "{ts} {} [{}] {msg} (status={status}, took {latency:.1}ms)",
                level.to_uppercase(),
                service.name
            );
        }
        if pick < self.options.plain_ratio + self.options.logfmt_ratio {
            return format!(
                "ts={ts} level={level} service={} host={host} msg=\"{msg}\" method={method} path={path} status={status} duration={latency:.1}ms trace_id={trace}",
                service.name
            );
        }
        let mut line = String::with_capacity(320);
        line.push_str("{\"ts\":\"");
        line.push_str(ts);
        line.push_str("\",\"level\":\"");
        line.push_str(level);
        line.push_str("\",\"service\":\"");
        line.push_str(service.name);
        line.push_str("\",\"host\":\"");
        line.push_str(host);
        line.push_str("\",\"msg\":\"");
        line.push_str(msg);
        line.push_str(&format!(
            "\",\"trace_id\":\"{trace}\",\"span_id\":\"{}\",\"http\":{{\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status}}},\"duration_ms\":{latency:.3},\"event_id\":\"{}\"}}",
            e.span, e.event_id
        ));
        line
    }
}

/// Parse `now` or an RFC 3339 UTC time like `2026-11-25T10:00:00Z` to ns since the epoch.
pub fn parse_start(s: &str) -> Result<i64, String> {
    if s == "now" {
        return Ok(time::now_ns());
    }
    let err = || format!("`{s}`: expected `now` or a UTC time like 2026-11-25T10:00:00Z");
    let s = s.strip_suffix('Z').ok_or_else(err)?;
    let (date, clock) = s.split_once('T').ok_or_else(err)?;
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || c.len() != 3 {
        return Err(err());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| err());
    let days = time::days_from_civil(num(d[0])?, num(d[1])? as u32, num(d[2])? as u32);
    let secs = days * 86_400 + num(c[0])? * 3600 + num(c[1])? * 60 + num(c[2])?;
    Ok(secs * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> GenOptions {
        GenOptions {
            seed: 7,
            start_ns: parse_start("2026-11-25T10:00:00Z").unwrap(),
            ..GenOptions::default()
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<Line> = Generator::new(options()).take(500).collect();
        let b: Vec<Line> = Generator::new(options()).take(500).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn mixes_formats_and_duplicates() {
        let lines: Vec<Line> = Generator::new(GenOptions {
            duplicate_ratio: 0.1,
            ..options()
        })
        .take(5_000)
        .collect();
        let json = lines.iter().filter(|l| l.text.starts_with('{')).count();
        let logfmt = lines.iter().filter(|l| l.text.starts_with("ts=")).count();
        let dups = lines.iter().filter(|l| l.duplicate).count();
        assert!(json > 4_000, "{json}");
        assert!(logfmt > 100, "{logfmt}");
        assert!((400..600).contains(&dups), "{dups}");
        for l in lines.iter().filter(|l| l.text.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(&l.text).expect("valid JSON");
        }
    }

    #[test]
    fn bursts_raise_the_error_rate_of_one_service() {
        let burst: Burst = "checkout@100+100:0.6".parse().unwrap();
        let lines: Vec<Line> = Generator::new(GenOptions {
            duplicate_ratio: 0.0,
            plain_ratio: 0.0,
            logfmt_ratio: 0.0,
            bursts: vec![burst],
            ..options()
        })
        .take(30_000)
        .collect();
        let start = options().start_ns;
        let errors = |service: &str, from: f64, to: f64| {
            let in_span: Vec<&Line> = lines
                .iter()
                .filter(|l| {
                    let s = (l.event_time - start) as f64 / 1e9;
                    l.key == service && s >= from && s < to
                })
                .collect();
            let errs = in_span
                .iter()
                .filter(|l| l.text.contains("\"level\":\"error\""))
                .count();
            errs as f64 / in_span.len() as f64
        };
        assert!(errors("checkout", 100.0, 200.0) > 0.45);
        assert!(errors("checkout", 0.0, 100.0) < 0.03);
        assert!(errors("payments", 100.0, 200.0) < 0.03);
    }

    #[test]
    fn parses_burst_specs_and_start_times() {
        assert!("checkout".parse::<Burst>().is_err());
        assert!("checkout@1+2:1.5".parse::<Burst>().is_err());
        assert_eq!(parse_start("1970-01-01T00:01:00Z").unwrap(), 60_000_000_000);
        assert!(parse_start("yesterday").is_err());
    }
}
