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

use super::{DeadLettered, Router, SinkContext, SinkError, SinkInput, SinkStats};
use crate::event::{DeadLetter, Events, SinkBatch};
use crate::health::{self, FailState};
use bulk::{ItemOutcome, Transport};
use document::{BulkItem, Encoder, IndexNaming};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use template::{Engine, Lifecycle, SetupError};
use tokio::sync::mpsc;

/// Failed attempts of one batch before `SinkUnavailable` is raised.
const ATTEMPTS_BEFORE_UNAVAILABLE: u32 = 3;
/// Start-up tries to reach the engine this many times before giving up.
const SETUP_ATTEMPTS: u32 = 5;

pub async fn start(
    ctx: SinkContext,
    config: &ElasticsearchSinkConfig,
    mut rx: mpsc::Receiver<SinkInput>,
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

    let writer = Arc::new(Writer {
        name: ctx.name.clone(),
        transport,
        naming,
        router: ctx.router.clone(),
        stats: ctx.stats.clone(),
        batch_max_bytes: config.batch_max_bytes,
        backoff_base: Duration::from_millis(config.retry_initial_backoff_ms),
        backoff_cap: Duration::from_millis(config.retry_max_backoff_ms),
    });
    let max_in_flight = config.max_in_flight_batches;
    Ok(tokio::spawn(async move {
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                input = rx.recv(), if in_flight.len() < max_in_flight => {
                    let Some(input) = input else { break };
                    match input {
                        SinkInput::Flush(done) => {
                            while in_flight.next().await.is_some() {}
                            let _ = done.send(());
                        }
                        // In-flight batches complete on their own: nothing held per partition.
                        SinkInput::Revoked(_) | SinkInput::Lost(_) => {}
                        SinkInput::Batch(batch) => in_flight.push(writer.clone().write(batch)),
                    }
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }))
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

/// Writes batches: encode, send, retry what is transient, dead-letter what is refused.
struct Writer {
    name: String,
    transport: Transport,
    naming: IndexNaming,
    router: Arc<Router>,
    stats: Arc<SinkStats>,
    batch_max_bytes: usize,
    backoff_base: Duration,
    backoff_cap: Duration,
}

impl Writer {
    async fn write(self: Arc<Self>, batch: SinkBatch) {
        let (items, rejected) = self.index(&batch.route, &batch.events).await;
        if rejected.is_empty() {
            batch.ack.ack();
            return;
        }
        if &*batch.route == "dlq" {
            tracing::error!(sink = %self.name, count = rejected.len(), error = %rejected[0].1,
                "the engine refused dead letters; the batch fails and will be replayed");
            return;
        }
        tracing::warn!(sink = %self.name, count = rejected.len(), error = %rejected[0].1,
            "the engine refused documents; dead-lettering them");
        let letters: Vec<DeadLetter> = rejected
            .into_iter()
            .map(|(index, reason)| DeadLetter {
                origin: origin_of(&batch.events, index),
                reason: format!("sink `{}`: {reason}", self.name),
                payload: items[index].source().to_vec(),
                timestamp: crate::time::now_ns(),
            })
            .collect();
        drop(items);
        SinkStats::add(&self.stats.dead_lettered, letters.len() as u64);
        let written = match self
            .router
            .dead_letter(&self.name, letters, &batch.ack)
            .await
        {
            DeadLettered::Own(letters) => self.write_own_dead_letters(letters).await,
            other => other.sent(&self.name),
        };
        if written {
            batch.ack.ack();
        }
    }

    /// This sink takes `dlq` too: write the dead letters of the batch now, within it.
    async fn write_own_dead_letters(&self, letters: Vec<DeadLetter>) -> bool {
        let (_, rejected) = self.index("dlq", &Events::DeadLetters(letters)).await;
        if let Some((_, error)) = rejected.first() {
            tracing::error!(sink = %self.name, count = rejected.len(), %error,
                "the engine refused dead letters; the batch fails and will be replayed");
            return false;
        }
        true
    }

    /// Encode `events` of `route` and deliver them: the items, and those refused for good.
    async fn index(&self, route: &str, events: &Events) -> (Vec<BulkItem>, Vec<(usize, String)>) {
        let encoder = Encoder {
            naming: &self.naming,
            route,
        };
        let items = match events {
            Events::Logs(logs) => encoder.logs(logs.records()),
            Events::Raw(messages) => encoder.raw(messages),
            Events::DeadLetters(letters) => encoder.dead_letters(letters),
        };
        let bytes: u64 = items.iter().map(|i| i.lines.len() as u64).sum();
        SinkStats::add(&self.stats.in_flight_bytes, bytes);
        SinkStats::add(&self.stats.sent, items.len() as u64);
        let rejected = self.deliver(&items).await;
        self.stats
            .in_flight_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
        SinkStats::add(
            &self.stats.acknowledged,
            (items.len() - rejected.len()) as u64,
        );
        (items, rejected)
    }

    /// Send until every item is settled; returns the refused ones with the engine's error.
    async fn deliver(&self, items: &[BulkItem]) -> Vec<(usize, String)> {
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut round = Round {
            max_bytes: self.batch_max_bytes,
            ..Round::default()
        };
        let mut attempt = 0u32;
        while !pending.is_empty() {
            for (indices, body) in bulk::bodies(items, &pending, round.max_bytes) {
                let response = self
                    .transport
                    .send(
                        reqwest::Method::POST,
                        bulk::BULK_PATH,
                        Some(&body),
                        "application/x-ndjson",
                    )
                    .await;
                self.read_answer(indices, body.len(), response, &mut round);
            }
            if round.retry.is_empty() {
                break;
            }
            let mut retry = std::mem::take(&mut round.retry);
            retry.sort_unstable();
            attempt += 1;
            SinkStats::add(&self.stats.retried, retry.len() as u64);
            let error = &round.last_error;
            if attempt == 1 || attempt.is_multiple_of(20) {
                tracing::warn!(sink = %self.name, attempt, items = retry.len(), %error,
                    "search engine did not take every document; retrying");
            }
            if attempt >= ATTEMPTS_BEFORE_UNAVAILABLE {
                health::global().raise(
                    FailState::SinkUnavailable,
                    &self.name,
                    format!(
                        "{} documents not accepted after {attempt} attempts: {error}. Check that the search engine is up, reachable and taking writes (index blocks, disk watermarks, privileges).",
                        retry.len()
                    ),
                );
            }
            tokio::time::sleep(super::backoff(attempt, self.backoff_base, self.backoff_cap)).await;
            pending = retry;
        }
        round.rejected
    }

    /// Settle the items `indices` of one request from the engine's answer.
    fn read_answer(
        &self,
        indices: Vec<usize>,
        body_len: usize,
        response: Result<bulk::HttpResponse, bulk::TransportError>,
        round: &mut Round,
    ) {
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                round.last_error = e.to_string();
                round.retry.extend(indices);
                return;
            }
        };
        match response.status {
            200 => match bulk::parse_response(&response.body, indices.len()) {
                Ok(outcomes) => {
                    let mut settled = false;
                    for (index, outcome) in indices.into_iter().zip(outcomes) {
                        match outcome {
                            ItemOutcome::Indexed | ItemOutcome::AlreadyThere => settled = true,
                            ItemOutcome::Retry(e) => {
                                round.last_error = e;
                                round.retry.push(index);
                            }
                            ItemOutcome::Reject(e) => {
                                settled = true;
                                round.rejected.push((index, e));
                            }
                        }
                    }
                    // Answers that settle nothing (every item blocked, say) are no recovery.
                    if settled {
                        health::global().clear(FailState::SinkUnavailable, &self.name);
                    }
                }
                // Not an answer about these documents: none of them is settled.
                Err(e) => {
                    round.last_error = e;
                    round.retry.extend(indices);
                }
            },
            // Too large for the engine's http.max_content_length: send smaller requests; a
            // single document that is too large is refused for good.
            413 if indices.len() == 1 => round.rejected.push((
                indices[0],
                format!("413: the document is larger than the engine accepts ({body_len} bytes)"),
            )),
            413 => {
                round.max_bytes = (body_len / 2).max(1);
                round.last_error = "413: request too large; splitting".into();
                round.retry.extend(indices);
            }
            status => {
                // 429/5xx are transient by definition; other whole-request errors (auth,
                // proxy) are not the documents' fault, so they are retried too — the sink
                // stalls visibly rather than losing data.
                round.last_error = format!("{status}: {}", response.excerpt());
                round.retry.extend(indices);
            }
        }
    }
}

/// The state of delivering one batch across its attempts.
#[derive(Default)]
struct Round {
    /// Items to send again, and the last reason one was not taken.
    retry: Vec<usize>,
    last_error: String,
    /// Items refused for good, with the engine's error.
    rejected: Vec<(usize, String)>,
    /// Largest request body; halved on `413`.
    max_bytes: usize,
}

fn origin_of(events: &Events, index: usize) -> crate::Origin {
    match events {
        Events::Logs(logs) => logs.records()[index].origin().clone(),
        Events::Raw(messages) => messages[index].origin.clone(),
        Events::DeadLetters(letters) => letters[index].origin.clone(),
    }
}
