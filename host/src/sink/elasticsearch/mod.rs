//! Elasticsearch / OpenSearch sink: documents in ECS through the `_bulk` API.
//!
//! Works with Elasticsearch 8/9, OpenSearch 2/3 and Amazon OpenSearch Service (SigV4). The
//! client is a small `_bulk` client over reqwest rather than the `elasticsearch` crate:
//! that crate is alpha, speaks only to Elasticsearch (OpenSearch is half the users), and
//! does not sign with SigV4; and a sink needs only four calls (`_bulk`, `GET /`, index
//! templates, lifecycle policies) whose item-level `_bulk` semantics we must handle
//! ourselves anyway.
//!
//! - [`config`]: the `[sinks.<name>]` table.
//! - [`document`]: events → ECS documents, index names, deterministic `_id`s.
//! - [`bulk`]: the HTTP transport and the `_bulk` request/response.
//! - [`auth`]: basic, API key, SigV4, TLS with a custom CA.
//! - [`template`]: engine detection, index templates and lifecycle policies at start-up.
//! - [`kibana`]: importing the saved objects in `kibana/` into Kibana or OpenSearch
//!   Dashboards.
//!
//! Delivery: every document is written with `create` and an `_id` derived from its origin,
//! so a retry or a replay after a crash finds it already there (`409`, counted as
//! delivered) instead of duplicating it. A `_bulk` answer counts only with `errors` and one
//! item per document sent; anything else is a failed request. Items the cluster cannot take
//! now (`429`, `5xx`, a write block, a missing or closed index, …), and whole requests that
//! fail (connection refused, timeout, `5xx`, auth, an answer that is not a `_bulk` one),
//! are retried with exponential backoff and jitter — only the items not yet settled, and
//! without a deadline. While a batch retries the sink takes no more input, so backpressure
//! pauses the Kafka consumer and memory stays bounded (`max_in_flight_batches` batches at
//! most). After a few failed attempts `SinkUnavailable` is raised; the first answer that
//! settles a document clears it. Only errors in the document itself (`400` mapping, parsing
//! or validation errors) dead-letter it, with the engine's error, while the rest of the
//! batch lands; when this sink takes `dlq` too it writes those dead letters itself, within
//! the batch. A batch is acknowledged once every item is indexed or dead-lettered.

pub mod auth;
pub mod bulk;
pub mod config;
pub mod document;
pub mod kibana;
pub mod template;

pub use config::ElasticsearchSinkConfig;

use super::driver::{Answer, Driver, DriverSettings, Failure, Failures, Protocol};
use super::retry::Backoff;
use super::{SinkContext, SinkError, SinkInput, SinkInputs, SinkKind, SinkStats, Starting};
use crate::event::{DeadLetter, Events, SinkBatch};
use crate::route::RouteName;
use bulk::{ItemOutcome, Transport};
use document::{Encoder, IndexNaming};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use template::{Engine, Lifecycle, SetupError};
use tokio::sync::mpsc;

/// Start-up tries to reach the engine this many times before giving up.
const SETUP_ATTEMPTS: u32 = 5;

impl SinkKind for ElasticsearchSinkConfig {
    fn routes(&self) -> &[RouteName] {
        &self.routes
    }

    fn check(&self) -> Result<(), (String, String)> {
        ElasticsearchSinkConfig::check(self)
    }

    fn start(&self, ctx: SinkContext, input: SinkInputs) -> Starting<'_> {
        Box::pin(start(ctx, self, input))
    }
}

pub async fn start(
    ctx: SinkContext,
    config: &ElasticsearchSinkConfig,
    rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let fail = |message: String| SinkError::Start {
        sink: ctx.name.clone(),
        message,
    };
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let http = auth::http_client(&config.tls, timeout).map_err(|e| fail(e.to_string()))?;
    let auth = auth::Auth::from_config(&config.auth)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let transport = Transport::new(http, config.base_urls(), auth, config.compression);
    let naming = IndexNaming::from(&config.index);
    let engine = setup_with_retries(&ctx.name, &transport, config, &naming)
        .await
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(sink = %ctx.name, engine = %engine.name(), "search sink ready");

    let protocol = SearchProtocol(Arc::new(Writer {
        name: ctx.name.clone(),
        transport,
        naming,
        stats: ctx.stats.clone(),
        max_bytes: AtomicUsize::new(config.batch_max_bytes),
    }));
    let settings = DriverSettings {
        max_in_flight: config.max_in_flight_batches,
        backoff: Backoff::from_millis(config.retry_initial_backoff_ms, config.retry_max_backoff_ms),
        hint: "Check that the search engine is up, reachable and taking writes (index blocks, disk watermarks, privileges).",
    };
    Ok(Driver::spawn(&ctx, protocol, settings, rx))
}

/// Detect the engine and install templates and the lifecycle policy, retrying a few times
/// while the engine cannot be reached.
async fn setup_with_retries(
    name: &str,
    transport: &Transport,
    config: &ElasticsearchSinkConfig,
    naming: &IndexNaming,
) -> Result<Engine, SetupError> {
    let mut attempt = 0;
    loop {
        match setup(name, transport, config, naming).await {
            Err(SetupError::Transport(e)) if attempt + 1 < SETUP_ATTEMPTS => {
                tracing::warn!(sink = name, error = %e, "search engine not reachable yet; retrying");
                attempt += 1;
                tokio::time::sleep(super::backoff(
                    attempt,
                    Duration::from_millis(200),
                    Duration::from_secs(3),
                ))
                .await;
            }
            other => return other,
        }
    }
}

async fn setup(
    name: &str,
    transport: &Transport,
    config: &ElasticsearchSinkConfig,
    naming: &IndexNaming,
) -> Result<Engine, SetupError> {
    let engine = template::detect(transport, config.engine).await?;
    if !config.install_templates {
        return Ok(engine);
    }
    let lifecycle =
        template::install_lifecycle(transport, engine, naming, config.retention_days).await;
    let ilm_policy = match (&lifecycle, engine) {
        (Ok(Lifecycle::Present(policy)), Engine::Elasticsearch { .. }) => Some(policy.clone()),
        _ => None,
    };
    match lifecycle {
        Ok(Lifecycle::Unavailable) => tracing::info!(
            sink = name,
            engine = %engine.name(),
            "the engine has no lifecycle management (ILM/ISM); indices are kept until deleted by other means"
        ),
        Ok(_) => {}
        // Lifecycle management is a convenience: without it the data still lands.
        Err(e) => tracing::warn!(sink = name, error = %e, "could not install the lifecycle policy"),
    }
    let preferred = engine.full_text_type();
    match install_templates(name, transport, naming, ilm_policy.as_deref(), preferred).await {
        Err(e) if preferred != "text" && e.lacks_field_type(preferred) => {
            tracing::info!(
                sink = name,
                "the engine has no `{preferred}` field type; mapping messages as `text`"
            );
            install_templates(name, transport, naming, ilm_policy.as_deref(), "text").await?;
        }
        other => other?,
    }
    Ok(engine)
}

async fn install_templates(
    name: &str,
    transport: &Transport,
    naming: &IndexNaming,
    ilm_policy: Option<&str>,
    full_text: &str,
) -> Result<(), SetupError> {
    for t in template::templates(full_text, naming, ilm_policy) {
        if template::install_template(transport, &t).await? {
            tracing::info!(sink = name, template = %t.name, "index template installed");
        }
    }
    Ok(())
}

/// How this sink writes a batch: `_bulk` requests of its documents, read item by item.
struct SearchProtocol(Arc<Writer>);

impl Protocol for SearchProtocol {
    fn send<'a>(
        &'a self,
        batch: &'a SinkBatch,
        only: Option<&'a [usize]>,
    ) -> BoxFuture<'a, Answer> {
        let writer = self.0.clone();
        let route = batch.route.clone();
        let events = batch.events.clone();
        let only = only.map(<[usize]>::to_vec);
        Box::pin(
            async move { Answer::new(async move { writer.write(&route, &events, only).await }) },
        )
    }

    fn describe(&self, items: usize) -> String {
        format!("indexing {items} documents")
    }
}

/// Encodes and sends documents, and reads the engine's answers.
struct Writer {
    name: String,
    transport: Transport,
    naming: IndexNaming,
    stats: Arc<SinkStats>,
    /// Largest request body; halved on `413`, for every batch from then on.
    max_bytes: AtomicUsize,
}

impl Writer {
    /// One attempt at the documents of `events` (all, or `only`): what was not indexed.
    async fn write(
        &self,
        route: &RouteName,
        events: &Events,
        only: Option<Vec<usize>>,
    ) -> Failures {
        let encoder = Encoder {
            naming: &self.naming,
            route,
        };
        let items = match events {
            Events::Logs(logs) => encoder.logs(logs.records()),
            Events::Raw(messages) => encoder.raw(messages),
            Events::DeadLetters(letters) => encoder.dead_letters(letters),
        };
        let pending = only.unwrap_or_else(|| (0..items.len()).collect());
        let bytes: u64 = pending.iter().map(|&i| items[i].lines.len() as u64).sum();
        SinkStats::add(&self.stats.in_flight_bytes, bytes);
        let mut failures = Failures::new();
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        for (indices, body) in bulk::bodies(&items, &pending, max_bytes) {
            let body_len = body.len();
            let response = self
                .transport
                .send(
                    reqwest::Method::POST,
                    bulk::BULK_PATH,
                    Some(body),
                    "application/x-ndjson",
                )
                .await;
            for (index, failure) in self.read_answer(indices, body_len, response) {
                let failure = failure.map_err(|reason| DeadLetter {
                    origin: origin_of(events, index),
                    reason: format!("sink `{}`: {reason}", self.name),
                    payload: items[index].source().to_vec(),
                    timestamp: crate::time::now_ns(),
                });
                failures.push((index, failure.map_or_else(Failure::Refused, Failure::Retry)));
            }
        }
        self.stats
            .in_flight_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
        failures
    }

    /// The items `indices` of one request not indexed, from the engine's answer: to send
    /// again (`Ok`, why) or refused for good (`Err`, the engine's error).
    fn read_answer(
        &self,
        indices: Vec<usize>,
        body_len: usize,
        response: Result<bulk::HttpResponse, bulk::TransportError>,
    ) -> Vec<(usize, Result<String, String>)> {
        let retry_all = |indices: Vec<usize>, why: String| {
            indices.into_iter().map(|i| (i, Ok(why.clone()))).collect()
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => return retry_all(indices, e.to_string()),
        };
        match response.status {
            200 => match bulk::parse_response(&response.body, indices.len()) {
                Ok(outcomes) => indices
                    .into_iter()
                    .zip(outcomes)
                    .filter_map(|(index, outcome)| match outcome {
                        ItemOutcome::Indexed | ItemOutcome::AlreadyThere => None,
                        ItemOutcome::Retry(e) => Some((index, Ok(e))),
                        ItemOutcome::Reject(e) => Some((index, Err(e))),
                    })
                    .collect(),
                // Not an answer about these documents: none of them is settled.
                Err(e) => retry_all(indices, e),
            },
            // Too large for the engine's http.max_content_length: send smaller requests; a
            // single document that is too large is refused for good.
            413 if indices.len() == 1 => vec![(
                indices[0],
                Err(format!(
                    "413: the document is larger than the engine accepts ({body_len} bytes)"
                )),
            )],
            413 => {
                self.max_bytes
                    .fetch_min((body_len / 2).max(1), Ordering::Relaxed);
                retry_all(indices, "413: request too large; splitting".into())
            }
            // 429/5xx are transient by definition; other whole-request errors (auth,
            // proxy) are not the documents' fault, so they are retried too — the sink
            // stalls visibly rather than losing data.
            status => retry_all(indices, format!("{status}: {}", response.excerpt())),
        }
    }
}

fn origin_of(events: &Events, index: usize) -> crate::Origin {
    match events {
        Events::Logs(logs) => logs.records()[index].origin().clone(),
        Events::Raw(messages) => messages[index].origin.clone(),
        Events::DeadLetters(letters) => letters[index].origin.clone(),
    }
}
