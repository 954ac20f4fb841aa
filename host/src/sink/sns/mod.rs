//! SNS alerting sink: anomaly alerts (route `alerts`) and the host's fail states become
//! SNS messages under one alert policy; SNS subscriptions deliver them to email, Slack
//! or Teams.
//!
//! - `config.rs` — the `[sinks.<name>]` table and its checks;
//! - `input.rs` — alert and metric records → policy inputs;
//! - `policy.rs` — cooldown, resolution, grouping, minimum severity, rate limit (pure);
//! - `message.rs` — subject, human text, structured JSON per subscription protocol;
//! - `publish.rs` — the client, the start-up check, `PublishBatch` with retries.
//!
//! Acknowledgements: a batch is acknowledged once every message the policy decided to
//! send because of it is published. Suppressed alerts are acknowledged too — not sending
//! them is the decision, and the lake and search sinks keep them. While a group waits
//! for its window to complete, the batches that fed it stay unacknowledged.
//!
//! The policy needs to know when one pipeline output is complete (its metrics and alerts
//! arrive as separate batches with the same acknowledgement): it settles when a batch of
//! a different output arrives, on `Flush`, and its wall-clock duties run every second.

pub mod config;
mod input;
pub mod message;
pub mod policy;
pub mod publish;

pub use config::SnsSinkConfig;

use super::{SinkContext, SinkError, SinkInput, SinkInputs, SinkKind, SinkStats, Starting};
use crate::ack::AckHandle;
use crate::event::{DeadLetter, Events, SinkBatch};
use crate::health::{self, FailState, HealthEvent};
use crate::route::RouteName;
use crate::{Origin, time};
use futures::future::BoxFuture;
use message::{QueryHints, render};
use policy::{AlertPolicy, Notification, Verdict};
use publish::Publisher;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

impl SinkKind for SnsSinkConfig {
    fn routes(&self) -> &[RouteName] {
        &self.routes
    }

    fn check(&self) -> Result<(), (String, String)> {
        SnsSinkConfig::check(self)
    }

    fn preflight<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(validate(name, self))
    }

    fn start(&self, ctx: SinkContext, input: SinkInputs) -> Starting<'_> {
        Box::pin(start(ctx, self, input))
    }
}

/// Start the sink: connect, check the topic (failing with a clear error), then run.
pub async fn start(
    ctx: SinkContext,
    config: &SnsSinkConfig,
    rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let fail = |e: publish::SnsError| SinkError::Start {
        sink: ctx.name.clone(),
        message: e.to_string(),
    };
    let client = publish::connect(config).await.map_err(fail)?;
    publish::check_topic(&client, config, &format!("sinks.{}.topic_arn", ctx.name))
        .await
        .map_err(fail)?;
    if !config.takes_metrics() {
        tracing::warn!(sink = %ctx.name,
            "this SNS sink does not take the `metrics` route, so incidents never resolve; add \"metrics\" to its routes");
    }
    // Subscribe before anything can be missed; conditions raised before now are
    // announced first.
    let health_events = config.fail_states.then(|| health::global().subscribe());
    let mut task = SnsTask {
        publisher: Publisher {
            client,
            sink: ctx.name.clone(),
            topic_arn: config.topic_arn.clone(),
            fifo: config.is_fifo(),
            message_group_id: config.message_group_id.clone(),
            stats: ctx.stats.clone(),
        },
        policy: AlertPolicy::new(config.policy.clone()),
        hints: QueryHints {
            kibana_url: config.kibana_url.clone(),
            kibana_index: config.kibana_index.clone(),
            athena_table: config.athena_table.clone(),
        },
        ctx,
        current_output: None,
        held: Vec::new(),
        batches: 0,
        queued_since: None,
    };
    tracing::info!(sink = %task.ctx.name, topic = %config.topic_arn, fifo = config.is_fifo(), "SNS alerting sink ready");
    Ok(tokio::spawn(async move {
        if health_events.is_some() {
            for condition in health::global().conditions() {
                task.on_health(HealthEvent::Raised(condition)).await;
            }
        }
        task.run(rx, health_events).await;
    }))
}

/// Check what can be checked without sending: credentials, the topic, FIFO or not.
/// For `sluice validate`.
pub async fn validate(name: &str, config: &SnsSinkConfig) -> Result<(), SinkError> {
    let fail = |e: publish::SnsError| SinkError::Start {
        sink: name.to_owned(),
        message: e.to_string(),
    };
    let client = publish::connect(config).await.map_err(fail)?;
    publish::check_topic(&client, config, &format!("sinks.{name}.topic_arn"))
        .await
        .map_err(fail)
}

struct SnsTask {
    ctx: SinkContext,
    publisher: Publisher,
    policy: AlertPolicy,
    hints: QueryHints,
    /// The acknowledgement sequence of the pipeline output being read.
    current_output: Option<u64>,
    /// Batches read and not yet acknowledged, with their arrival number.
    held: Vec<(u64, AckHandle)>,
    batches: u64,
    /// Arrival number of the first batch that queued an alert still waiting in a group.
    queued_since: Option<u64>,
}

impl SnsTask {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<SinkInput>,
        mut health_events: Option<broadcast::Receiver<HealthEvent>>,
    ) {
        let mut wall_tick = tokio::time::interval(Duration::from_secs(1));
        wall_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(SinkInput::Batch(batch)) => self.on_batch(batch).await,
                    // Each batch is published as it comes: nothing held per partition.
                    Some(SinkInput::Revoked(_) | SinkInput::Lost(_)) => {}
                    Some(SinkInput::Flush(done)) => {
                        let notifications = self.policy.flush(time::now_ns());
                        self.send(notifications).await;
                        let _ = done.send(());
                    }
                    None => break,
                },
                event = recv_health(&mut health_events) => match event {
                    Ok(event) => self.on_health(event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(sink = %self.ctx.name, missed,
                            "fail-state events were missed; re-reading the active ones");
                        for condition in health::global().conditions() {
                            self.on_health(HealthEvent::Raised(condition)).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => health_events = None,
                },
                _ = wall_tick.tick() => {
                    let notifications = self.policy.poll(time::now_ns());
                    self.send(notifications).await;
                }
            }
        }
        let notifications = self.policy.flush(time::now_ns());
        self.send(notifications).await;
    }

    async fn on_batch(&mut self, batch: SinkBatch) {
        let seq = batch.ack.seq();
        if self.current_output.is_some_and(|s| s != seq) {
            // Everything of the previous output has arrived.
            let notifications = self.policy.settle(time::now_ns());
            self.send(notifications).await;
        }
        self.current_output = Some(seq);
        self.batches += 1;
        let mut letters = Vec::new();
        if let Events::Logs(logs) = &*batch.events {
            let now = time::now_ns();
            match batch.route {
                RouteName::Alerts => {
                    for r in logs.records() {
                        match input::alert(r) {
                            Ok(alert) => {
                                let had_queue = self.policy.has_queued();
                                if self.policy.on_alert(alert, now) == Verdict::Queued && !had_queue
                                {
                                    self.queued_since = Some(self.batches);
                                }
                            }
                            Err(reason) => letters.push(DeadLetter {
                                origin: r.origin().clone(),
                                reason: format!("sink `{}`: {reason}", self.ctx.name),
                                payload: crate::codec::record_to_json(r),
                                timestamp: now,
                            }),
                        }
                    }
                }
                RouteName::Metrics => {
                    for r in logs.records() {
                        if let Some(window) = input::window(r) {
                            self.policy.on_window(window);
                        }
                    }
                }
                _ => {}
            }
        }
        if !letters.is_empty() {
            SinkStats::add(&self.ctx.stats.dead_lettered, letters.len() as u64);
            let sent = self
                .ctx
                .router
                .dead_letter(&self.ctx.name, letters, &batch.ack);
            if !sent.await.sent(&self.ctx.name) {
                return; // the handle is dropped: the batch fails
            }
        }
        self.held.push((self.batches, batch.ack));
        self.ack_released();
    }

    async fn on_health(&mut self, event: HealthEvent) {
        let now = time::now_ns();
        let notifications = match event {
            // This sink's own outage can only be told once it is over.
            HealthEvent::Raised(c) | HealthEvent::Cleared(c)
                if c.state == FailState::SinkUnavailable && c.subject == self.ctx.name =>
            {
                return;
            }
            HealthEvent::Raised(c) => self.policy.on_fail_raised(c, now),
            HealthEvent::Cleared(c) => self.policy.on_fail_cleared(&c, now),
        };
        self.send(notifications).await;
    }

    /// Publish, dead-letter what SNS refused for good, then acknowledge what is done.
    async fn send(&mut self, notifications: Vec<Notification>) {
        if !notifications.is_empty() {
            let now = time::now_ns();
            let rendered = notifications
                .iter()
                .map(|n| render(n, &self.hints, now))
                .collect();
            let refused = self.publisher.publish(rendered).await;
            if !refused.is_empty() {
                self.dead_letter_refused(refused).await;
            }
        }
        if !self.policy.has_queued() {
            self.queued_since = None;
        }
        self.ack_released();
    }

    async fn dead_letter_refused(&mut self, refused: Vec<(message::Rendered, String)>) {
        tracing::error!(sink = %self.ctx.name, count = refused.len(), error = %refused[0].1,
            "SNS refused alert messages; dead-lettering them");
        SinkStats::add(&self.ctx.stats.dead_lettered, refused.len() as u64);
        let letters: Vec<DeadLetter> = refused
            .into_iter()
            .map(|(m, why)| DeadLetter {
                origin: Origin {
                    topic: format!("sns:{}", self.ctx.name),
                    partition: 0,
                    offset: 0,
                },
                reason: format!("sink `{}`: SNS refused the message: {why}", self.ctx.name),
                payload: m.json.to_string().into_bytes(),
                timestamp: time::now_ns(),
            })
            .collect();
        // Keep a batch pending until the dead letters are written; fail-state messages
        // have no batch, so they are only logged if nothing is held.
        if let Some((_, ack)) = self.held.first() {
            let ack = ack.clone();
            let sent = self.ctx.router.dead_letter(&self.ctx.name, letters, &ack);
            if !sent.await.sent(&self.ctx.name) {
                drop(ack);
            } else {
                ack.ack();
            }
        }
    }

    /// Acknowledge every held batch older than the first one whose alerts still wait in a
    /// group.
    fn ack_released(&mut self) {
        let keep_from = self.queued_since.unwrap_or(u64::MAX);
        let (done, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(n, _)| *n < keep_from);
        self.held = kept;
        for (_, ack) in done {
            ack.ack();
        }
    }
}

/// The next health event, or never when fail states are off.
async fn recv_health(
    events: &mut Option<broadcast::Receiver<HealthEvent>>,
) -> Result<HealthEvent, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
