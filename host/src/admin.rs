//! The admin HTTP endpoint: `/healthz` (liveness), `/readyz` (readiness, reflecting the
//! fail states in [`crate::health`]), `/metrics` (Prometheus text format) and `/tap` (a
//! sample of the records at a point of the pipeline as NDJSON, see [`crate::tap`]).
//!
//! Loopback by default; it serves read-only state and no secrets. Listening beyond
//! loopback, set `admin.token` and `admin.tls_cert`/`admin.tls_key`: with a token, every
//! request asks for `Authorization: Bearer <token>` except `/healthz`, which says only `ok`
//! and must answer probes that cannot send headers (systemd, a load balancer's liveness
//! check), and `/readyz`, which without the token answers its status code and `ready` alone
//! — enough for a load balancer — and its conditions (sink names, errors) only with it.
//! With TLS set the endpoint speaks HTTPS only.

use crate::config::AdminConfig;
use crate::health::{self, FailState};
use crate::pipeline::PipelineStats;
use crate::plugin::{LATENCY_BUCKETS_SECONDS, PluginStats};
use crate::sink::SinkStats;
use crate::source::SourceStats;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A counter family: name, help, and how to read it from a stats struct.
type Counter<S> = (&'static str, &'static str, fn(&S) -> &AtomicU64);

/// Everything `/metrics` reports.
pub struct AdminState {
    pub source: Arc<SourceStats>,
    pub plugins: Vec<(String, Arc<PluginStats>)>,
    pub pipeline: Arc<PipelineStats>,
    pub sinks: Vec<(String, Arc<SinkStats>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin endpoint: cannot listen on `{listen}` (admin.listen): {source}. Choose a free address or set admin.listen = \"\" to disable it."
    )]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error(
        "admin endpoint: {key} {}: {detail}. Give PEM files: the certificate chain in admin.tls_cert, its private key (PKCS#8, PKCS#1 or SEC1) in admin.tls_key.",
        path.display()
    )]
    Tls {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
}

/// Start serving as `config` says; returns the bound address.
pub async fn serve(
    config: &AdminConfig,
    state: Arc<AdminState>,
) -> Result<std::net::SocketAddr, AdminError> {
    let listen = config.listen.as_str();
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listen_error = |source| AdminError::Listen {
        listen: listen.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    let app = router(config.token.clone().map(Arc::from), state);
    match tls {
        Some(acceptor) => {
            let listener = TlsListener::start(listener, acceptor, address);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "admin endpoint stopped");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "admin endpoint stopped");
                }
            });
        }
    }
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%address, %scheme, token = config.token.is_some(), "admin endpoint listening");
    Ok(address)
}

fn router(token: Option<Arc<str>>, state: Arc<AdminState>) -> Router {
    let guard = token.clone();
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/tap", get(tap))
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let token = guard.clone();
                async move { authorize(token.as_deref(), request, next).await }
            },
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(move |headers: HeaderMap| {
                let token = token.clone();
                async move { readyz(authorized(token.as_deref(), &headers)) }
            }),
        )
        .merge(guarded)
        .with_state(state)
}

/// Whether a request may see everything: no token is set, or it carries it.
fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
}

/// Let a request through when no token is set or it carries it.
async fn authorize(
    token: Option<&str>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if authorized(token, request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this endpoint asks for `Authorization: Bearer <admin.token>`\n",
    )
        .into_response()
}

/// The server side of TLS from PEM files.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, AdminError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_error = |key: &'static str, path: &Path| {
        let path = path.to_owned();
        move |e: &dyn std::fmt::Display| AdminError::Tls {
            key,
            path,
            detail: e.to_string(),
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| tls_error("admin.tls_cert", cert)(&e))?;
    if chain.is_empty() {
        return Err(tls_error("admin.tls_cert", cert)(&"holds no certificate"));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error("admin.tls_key", key)(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| tls_error("admin.tls_key", key)(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Connections after their TLS handshake. Handshakes run each in a task of its own, so a
/// slow or silent client delays no other.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    address: std::net::SocketAddr,
}

impl TlsListener {
    fn start(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        address: std::net::SocketAddr,
    ) -> TlsListener {
        let (tx, ready) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "admin endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(stream)) => drop(sender.send((stream, peer)).await),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admin endpoint: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin endpoint: TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        TlsListener { ready, address }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /tap?point=…&filter=…&rate=…&limit=…`: NDJSON until `limit` lines were sent or
/// the client goes away.
async fn tap(uri: axum::http::Uri) -> axum::response::Response {
    let request = match tap_request(uri.query().unwrap_or("")) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let attached = crate::tap::global().attach(request);
    let stream = futures::stream::unfold(attached, |mut attached| async move {
        let line = attached.lines.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(line), attached))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// The tap a query string asks for: `point` (required), `filter`, `rate` (lines a second,
/// 100 by default), `limit` (lines, 1000 by default).
pub fn tap_request(query: &str) -> Result<crate::tap::Request, String> {
    let (mut point, mut filter, mut rate, mut limit) = (None, None, 100, 1000);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let number = |what: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{what}` must be a positive number, not `{value}`"))
        };
        match &*key {
            "point" => point = Some(value.parse().map_err(|e| format!("{e}"))?),
            "filter" => filter = Some(value.parse().map_err(|e| format!("{e}"))?),
            "rate" => rate = u32::try_from(number("rate")?).unwrap_or(u32::MAX),
            "limit" => limit = number("limit")?,
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: use point, filter, rate, limit"
                ));
            }
        }
    }
    Ok(crate::tap::Request {
        point: point.ok_or(
            "`point` is required: route:<name>, dlq, plugin:<name>:in or plugin:<name>:out",
        )?,
        filter: filter.unwrap_or_default(),
        rate,
        limit,
    })
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness; its conditions only to a request that may see everything.
fn readyz(full: bool) -> axum::response::Response {
    let health = health::global();
    let body = if full {
        serde_json::json!({
            "ready": health.is_ready(),
            "conditions": health.conditions(),
        })
    } else {
        serde_json::json!({ "ready": health.is_ready() })
    };
    let status = if health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::secrets::redact(&render(&state)).into_owned(),
    )
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Label values may hold any text; escape what the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The Prometheus text exposition of every counter.
pub fn render(state: &AdminState) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));
    source(&mut o, state);
    pipeline(&mut o, state);
    plugin_counters(&mut o, state);
    plugin_latency(&mut o, state);
    plugin_custom(&mut o, state);
    sinks(&mut o, state);
    fail_states(&mut o);
    o.family(
        "sluice_tap_attached",
        "gauge",
        "Taps attached (sluice tap); with none, tap points cost one atomic load.",
    );
    o.sample("sluice_tap_attached", &[], crate::tap::global().attached());
    process(&mut o);
    o.0
}

/// Messages read and each partition's lag.
fn source(o: &mut Out, state: &AdminState) {
    o.family(
        "sluice_source_consumed_total",
        "counter",
        "Messages read from the source.",
    );
    o.sample(
        "sluice_source_consumed_total",
        &[],
        load(&state.source.consumed),
    );
    partitions(
        o,
        "sluice_source_lag",
        "Messages behind the end of each assigned partition (from its start when never committed).",
        &state.source.lag,
    );
    partitions(
        o,
        "sluice_source_committed_offset",
        "The group's committed offset of each assigned partition.",
        &state.source.committed,
    );
}

/// A gauge per (topic, partition).
fn partitions(
    o: &mut Out,
    name: &str,
    help: &str,
    values: &std::sync::Mutex<std::collections::BTreeMap<(String, i32), i64>>,
) {
    o.family(name, "gauge", help);
    for ((topic, partition), value) in values.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let partition = partition.to_string();
        o.sample(name, &[("topic", topic), ("partition", &partition)], value);
    }
}

/// The pipeline's own counters.
fn pipeline(o: &mut Out, state: &AdminState) {
    let p = &state.pipeline;
    for (name, help, value) in [
        (
            "sluice_pipeline_batches_total",
            "Source batches processed.",
            load(&p.batches),
        ),
        (
            "sluice_pipeline_records_total",
            "Source records processed.",
            load(&p.records_in),
        ),
        (
            "sluice_pipeline_decode_rejected_total",
            "Messages dead-lettered because they could not be decoded.",
            load(&p.decode_rejected),
        ),
        (
            "sluice_pipeline_plugin_dead_lettered_total",
            "Records dead-lettered by or because of plugins.",
            load(&p.plugin_dead_lettered),
        ),
        (
            "sluice_pipeline_routed_total",
            "Records handed to sinks.",
            load(&p.records_routed),
        ),
        (
            "sluice_pipeline_unrouted_total",
            "Records on a route no sink takes (dropped).",
            load(&p.unrouted),
        ),
    ] {
        o.family(name, "counter", help);
        o.sample(name, &[], value);
    }
}

/// Each plugin's counters and memory.
fn plugin_counters(o: &mut Out, state: &AdminState) {
    let plugin_counters: [Counter<PluginStats>; 8] = [
        (
            "sluice_plugin_records_in_total",
            "Records given to the plugin.",
            |s| &s.records_in,
        ),
        (
            "sluice_plugin_records_out_total",
            "Records the plugin emitted.",
            |s| &s.records_out,
        ),
        ("sluice_plugin_traps_total", "Calls that trapped.", |s| {
            &s.traps
        }),
        (
            "sluice_plugin_timeouts_total",
            "Calls interrupted at their deadline.",
            |s| &s.timeouts,
        ),
        (
            "sluice_plugin_out_of_memory_total",
            "Calls that hit the memory limit.",
            |s| &s.out_of_memory,
        ),
        (
            "sluice_plugin_errors_total",
            "Calls that returned an error.",
            |s| &s.errors,
        ),
        (
            "sluice_plugin_foreign_origins_total",
            "Records dead-lettered for claiming an origin the plugin was never given.",
            |s| &s.foreign_origins,
        ),
        (
            "sluice_plugin_instantiations_total",
            "Instances created (1 + recycles).",
            |s| &s.instantiations,
        ),
    ];
    for (name, help, get) in plugin_counters {
        o.family(name, "counter", help);
        for (plugin, stats) in &state.plugins {
            o.sample(name, &[("plugin", plugin)], load(get(stats)));
        }
    }
    o.family(
        "sluice_plugin_memory_bytes",
        "gauge",
        "Linear memory of the plugin's instance.",
    );
    for (plugin, stats) in &state.plugins {
        o.sample(
            "sluice_plugin_memory_bytes",
            &[("plugin", plugin)],
            load(&stats.memory_bytes),
        );
    }
}

/// The histogram of each plugin's call durations.
fn plugin_latency(o: &mut Out, state: &AdminState) {
    o.family(
        "sluice_plugin_call_seconds",
        "histogram",
        "Duration of plugin calls.",
    );
    for (plugin, stats) in &state.plugins {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += load(&stats.latency_buckets[i]);
            let le = bound.to_string();
            o.sample(
                "sluice_plugin_call_seconds_bucket",
                &[("plugin", plugin), ("le", &le)],
                cumulative,
            );
        }
        let count = load(&stats.calls);
        o.sample(
            "sluice_plugin_call_seconds_bucket",
            &[("plugin", plugin), ("le", "+Inf")],
            count,
        );
        o.sample(
            "sluice_plugin_call_seconds_sum",
            &[("plugin", plugin)],
            load(&stats.call_nanos) as f64 / 1e9,
        );
        o.sample(
            "sluice_plugin_call_seconds_count",
            &[("plugin", plugin)],
            count,
        );
    }
}

/// The counters plugins keep themselves (`counter-add`).
fn plugin_custom(o: &mut Out, state: &AdminState) {
    o.family(
        "sluice_plugin_counter_total",
        "counter",
        "Counters the plugins keep themselves.",
    );
    for (plugin, stats) in &state.plugins {
        for (counter, value) in stats.custom() {
            o.sample(
                "sluice_plugin_counter_total",
                &[("plugin", plugin), ("counter", &counter)],
                value,
            );
        }
    }
}

/// Each sink's counters and bytes in flight.
fn sinks(o: &mut Out, state: &AdminState) {
    let sink_counters: [Counter<SinkStats>; 4] = [
        (
            "sluice_sink_sent_total",
            "Events handed to the destination.",
            |s| &s.sent,
        ),
        (
            "sluice_sink_acknowledged_total",
            "Events the destination durably accepted.",
            |s| &s.acknowledged,
        ),
        ("sluice_sink_retried_total", "Retried attempts.", |s| {
            &s.retried
        }),
        (
            "sluice_sink_dead_lettered_total",
            "Events the sink dead-lettered.",
            |s| &s.dead_lettered,
        ),
    ];
    for (name, help, get) in sink_counters {
        o.family(name, "counter", help);
        for (sink, stats) in &state.sinks {
            o.sample(name, &[("sink", sink)], load(get(stats)));
        }
    }
    o.family(
        "sluice_sink_in_flight_bytes",
        "gauge",
        "Bytes buffered or in flight in the sink.",
    );
    for (sink, stats) in &state.sinks {
        o.sample(
            "sluice_sink_in_flight_bytes",
            &[("sink", sink)],
            load(&stats.in_flight_bytes),
        );
    }
}

/// Fail states raised and active, and readiness.
fn fail_states(o: &mut Out) {
    let health = health::global();
    let counts = health.counts();
    let active = health.conditions();
    o.family(
        "sluice_fail_state_raised_total",
        "counter",
        "Times each fail state was raised.",
    );
    o.family(
        "sluice_fail_state_active",
        "gauge",
        "Active conditions per fail state.",
    );
    for state in FailState::ALL {
        o.sample(
            "sluice_fail_state_raised_total",
            &[("state", state.name())],
            counts.get(&state).copied().unwrap_or(0),
        );
        let n = active.iter().filter(|c| c.state == state).count();
        o.sample("sluice_fail_state_active", &[("state", state.name())], n);
    }
    o.family("sluice_ready", "gauge", "1 when the host is ready.");
    o.sample("sluice_ready", &[], u8::from(health.is_ready()));
}

/// The process's resident memory.
fn process(o: &mut Out) {
    o.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
    );
    o.sample("process_resident_memory_bytes", &[], resident_bytes());
}

/// Resident set size from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The metric families `/metrics` exports, with a histogram's series names.
    fn exported() -> BTreeSet<String> {
        let state = AdminState {
            source: Arc::default(),
            plugins: vec![("p".into(), Arc::default())],
            pipeline: Arc::default(),
            sinks: vec![("s".into(), Arc::default())],
        };
        let mut names = BTreeSet::new();
        for line in render(&state).lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
        names
    }

    /// Every metric a query names: identifiers that are not PromQL's own words.
    fn queried(expr: &str) -> Vec<String> {
        const PROMQL: &[&str] = &[
            "sum",
            "max",
            "min",
            "avg",
            "by",
            "rate",
            "irate",
            "increase",
            "histogram_quantile",
            "le",
            "topic",
            "partition",
            "plugin",
            "sink",
            "state",
            "instance",
        ];
        let mut names = Vec::new();
        let mut in_range = false;
        for token in
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '[' || c == ']'))
        {
            for part in token.split_inclusive(['[', ']']) {
                let word = part.trim_end_matches(['[', ']']);
                let skip =
                    in_range || word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit());
                if !skip && !PROMQL.contains(&word) {
                    names.push(word.to_owned());
                }
                if part.ends_with('[') {
                    in_range = true;
                } else if part.ends_with(']') {
                    in_range = false;
                }
            }
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_queries_only_metrics_the_host_exports() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/grafana/sluice.json")).unwrap();
        let exported = exported();
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for name in queried(expr) {
                    assert!(
                        exported.contains(&name),
                        "panel {:?} queries `{name}`, which /metrics does not export: {expr}",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 15, "only {checked} metric references found");
    }

    #[test]
    fn a_renamed_metric_is_caught() {
        assert_eq!(
            queried("sum by (sink) (rate(sluice_sink_retry_total[1m]))"),
            ["sluice_sink_retry_total"]
        );
        assert!(!exported().contains("sluice_sink_retry_total"));
    }
}
