//! Talking to SNS: the client, the start-up check, and `PublishBatch` within its limits
//! (10 entries, 256 KiB per call) with retries of what failed transiently.

use super::config::SnsSinkConfig;
use super::message::Rendered;
use crate::sink::SinkStats;
use crate::sink::retry::{Backoff, Retry};
use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

pub const MAX_BATCH_ENTRIES: usize = 10;
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Why the sink cannot start. Each names the key at fault and what to try.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error(
        "no AWS credentials found ({0}). Provide them with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE), or an instance or task role."
    )]
    NoCredentials(String),
    #[error(
        "`{key}`: topic {arn} does not exist in region {region}. Create it, or fix the ARN (or `region`)."
    )]
    TopicNotFound {
        key: String,
        arn: String,
        region: String,
    },
    #[error(
        "`{key}`: access to {arn} was denied ({detail}). Allow sns:GetTopicAttributes and sns:Publish on the topic for these credentials."
    )]
    Denied {
        key: String,
        arn: String,
        detail: String,
    },
    #[error(
        "cannot reach SNS at {endpoint}: {detail}. Check `endpoint`, `region` and the network."
    )]
    Unreachable { endpoint: String, detail: String },
    #[error(
        "`{key}`: {arn} is {actual}, but the sink is configured for {expected}. Fix `fifo` or the ARN."
    )]
    FifoMismatch {
        key: String,
        arn: String,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("`{key}`: SNS refused the topic check: {detail}")]
    Refused { key: String, detail: String },
}

/// A client for the configured region and endpoint, after checking that credentials exist.
pub async fn connect(config: &SnsSinkConfig) -> Result<aws_sdk_sns::Client, SnsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let provider = shared
        .credentials_provider()
        .ok_or_else(|| SnsError::NoCredentials("no credentials provider is configured".into()))?;
    provider
        .provide_credentials()
        .await
        .map_err(|e| SnsError::NoCredentials(e.to_string()))?;
    Ok(aws_sdk_sns::Client::new(&shared))
}

/// Check, without sending anything, that the topic exists, these credentials may use it,
/// and it is FIFO exactly when the config says so. `key` names the ARN in errors
/// (`sinks.<name>.topic_arn`).
pub async fn check_topic(
    client: &aws_sdk_sns::Client,
    config: &SnsSinkConfig,
    key: &str,
) -> Result<(), SnsError> {
    let arn = &config.topic_arn;
    let out = match client.get_topic_attributes().topic_arn(arn).send().await {
        Ok(out) => out,
        Err(SdkError::ServiceError(e)) => {
            let err = e.into_err();
            let detail = format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("no message")
            );
            return Err(if err.is_not_found_exception() {
                SnsError::TopicNotFound {
                    key: key.to_owned(),
                    arn: arn.clone(),
                    region: config.region(),
                }
            } else if err.is_authorization_error_exception()
                || err.is_invalid_security_exception()
                || matches!(
                    err.code(),
                    Some("InvalidClientTokenId" | "SignatureDoesNotMatch" | "AccessDenied")
                )
            {
                SnsError::Denied {
                    key: key.to_owned(),
                    arn: arn.clone(),
                    detail,
                }
            } else {
                SnsError::Refused {
                    key: key.to_owned(),
                    detail,
                }
            });
        }
        Err(e) => {
            return Err(SnsError::Unreachable {
                endpoint: config
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| format!("the {} regional endpoint", config.region())),
                detail: error_chain(&e),
            });
        }
    };
    let actual_fifo = out
        .attributes()
        .and_then(|a| a.get("FifoTopic"))
        .is_some_and(|v| v == "true");
    if actual_fifo != config.is_fifo() {
        let kind = |fifo: bool| {
            if fifo {
                "a FIFO topic"
            } else {
                "a standard topic"
            }
        };
        return Err(SnsError::FifoMismatch {
            key: key.to_owned(),
            arn: arn.clone(),
            actual: kind(actual_fifo),
            expected: kind(config.is_fifo()),
        });
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Split entries of `sizes` bytes into consecutive runs of at most `max_entries` entries
/// and `max_bytes` bytes. An entry larger than `max_bytes` gets a run of its own (SNS
/// refuses it, and the refusal is reported for that entry alone).
pub fn chunks(sizes: &[usize], max_entries: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start >= max_entries || (i > start && bytes + size > max_bytes);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Publishes rendered messages to one topic.
pub struct Publisher {
    pub client: aws_sdk_sns::Client,
    pub sink: String,
    pub topic_arn: String,
    pub fifo: bool,
    pub message_group_id: String,
    pub stats: Arc<SinkStats>,
}

/// How one attempt at an entry ended.
enum Outcome {
    Sent,
    Retry(String),
    Refused(String),
}

impl Publisher {
    /// Publish every message. Transient failures (throttling, 5xx, network) are retried
    /// with backoff and no deadline; returns the messages SNS refused for good, with why.
    pub async fn publish(&self, messages: Vec<Rendered>) -> Vec<(Rendered, String)> {
        let mut refused = Vec::new();
        let mut pending = messages;
        let mut retry = Retry::new(
            &self.sink,
            self.stats.clone(),
            Backoff::from_millis(200, 30_000),
            "Check that the topic exists, that the sink may publish to it, and that SNS is reachable.",
        );
        SinkStats::add(&self.stats.sent, pending.len() as u64);
        while !pending.is_empty() {
            let sizes: Vec<usize> = pending.iter().map(Rendered::size).collect();
            let mut outcomes: Vec<Outcome> = Vec::with_capacity(pending.len());
            for range in chunks(&sizes, MAX_BATCH_ENTRIES, MAX_BATCH_BYTES) {
                outcomes.extend(self.publish_batch(&pending[range]).await);
            }
            let mut again = Vec::new();
            let mut last_error = String::new();
            for (message, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Sent => SinkStats::add(&self.stats.acknowledged, 1),
                    Outcome::Retry(why) => {
                        last_error = why;
                        again.push(message);
                    }
                    Outcome::Refused(why) => refused.push((message, why)),
                }
            }
            if again.is_empty() {
                retry.succeeded();
                break;
            }
            let what = format!("publishing {} messages to {}", again.len(), self.topic_arn);
            retry
                .failed(again.len() as u64, &what, &last_error, None)
                .await;
            pending = again;
        }
        refused
    }

    async fn publish_batch(&self, batch: &[Rendered]) -> Vec<Outcome> {
        let mut entries = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            match self.entry(i, message) {
                Ok(entry) => entries.push(entry),
                Err(e) => return refuse_all(batch.len(), &e),
            }
        }
        let result = self
            .client
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let why = error_chain(&e);
                let transient = match &e {
                    SdkError::ServiceError(s) => {
                        let status = s.raw().status().as_u16();
                        status == 429
                            || status >= 500
                            || is_throttling(s.err().code().unwrap_or_default())
                    }
                    // Network, timeouts, unreadable responses: try again.
                    _ => true,
                };
                return (0..batch.len())
                    .map(|_| {
                        if transient {
                            Outcome::Retry(why.clone())
                        } else {
                            Outcome::Refused(why.clone())
                        }
                    })
                    .collect();
            }
        };
        let mut outcomes: Vec<Outcome> = (0..batch.len()).map(|_| Outcome::Sent).collect();
        for failed in out.failed() {
            let Some(index) = failed
                .id()
                .strip_prefix('m')
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&i| i < batch.len())
            else {
                continue;
            };
            let why = format!(
                "{}: {}",
                failed.code(),
                failed.message().unwrap_or("no message")
            );
            outcomes[index] = if failed.sender_fault() && !is_throttling(failed.code()) {
                Outcome::Refused(why)
            } else {
                Outcome::Retry(why)
            };
        }
        // An entry neither in `successful` nor in `failed` was not published: try again.
        let answered = out.successful().len() + out.failed().len();
        if answered < batch.len() {
            let successful: std::collections::HashSet<&str> =
                out.successful().iter().filter_map(|s| s.id()).collect();
            let failed: std::collections::HashSet<&str> =
                out.failed().iter().map(|f| f.id()).collect();
            for (i, outcome) in outcomes.iter_mut().enumerate() {
                let id = format!("m{i}");
                if !successful.contains(id.as_str()) && !failed.contains(id.as_str()) {
                    *outcome = Outcome::Retry("SNS did not answer for this entry".into());
                }
            }
        }
        outcomes
    }

    fn entry(&self, index: usize, m: &Rendered) -> Result<PublishBatchRequestEntry, String> {
        let attr = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| e.to_string())
        };
        let mut entry = PublishBatchRequestEntry::builder()
            .id(format!("m{index}"))
            .subject(&m.subject)
            .message(&m.message)
            .message_structure("json")
            // For subscription filter policies (e.g. only critical to the pager).
            .message_attributes("severity", attr(m.severity.name())?)
            .message_attributes("status", attr(m.status)?)
            .message_attributes("kind", attr(&m.kind)?);
        if let Some(first) = m.about.first() {
            entry = entry.message_attributes("service", attr(first)?);
        }
        if self.fifo {
            entry = entry
                .message_group_id(&self.message_group_id)
                .message_deduplication_id(&m.dedup_id);
        }
        entry.build().map_err(|e| e.to_string())
    }
}

fn refuse_all(n: usize, why: &str) -> Vec<Outcome> {
    (0..n).map(|_| Outcome::Refused(why.to_owned())).collect()
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "Throttled"
            | "ThrottledException"
            | "KMSThrottling"
            | "KMSThrottlingException"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_entry_and_byte_limits() {
        assert_eq!(chunks(&[], 10, 100), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&[1; 25], 10, 1_000), vec![0..10, 10..20, 20..25]);
        assert_eq!(chunks(&[40, 40, 40, 40], 10, 100), vec![0..2, 2..4]);
        // Exactly at the limit fits.
        assert_eq!(chunks(&[50, 50, 1], 10, 100), vec![0..2, 2..3]);
        // Too large on its own: alone in its run.
        assert_eq!(chunks(&[10, 500, 10], 10, 100), vec![0..1, 1..2, 2..3]);
        for (sizes, entries, bytes) in [
            (vec![7usize; 97], 10, 30),
            (vec![26_000; 33], 10, 256 * 1024),
        ] {
            let runs = chunks(&sizes, entries, bytes);
            let covered: usize = runs.iter().map(|r| r.len()).sum();
            assert_eq!(covered, sizes.len());
            for r in runs {
                assert!(r.len() <= entries);
                assert!(sizes[r].iter().sum::<usize>() <= bytes);
            }
        }
    }
}
