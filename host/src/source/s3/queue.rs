//! The SQS queue: receive, delete, keep invisible while processing (a heartbeat task), and
//! the start-up check that it exists and may be read.

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, QueueAttributeName};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A received message.
#[derive(Debug)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

#[derive(Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    pub url: String,
    visibility_s: i32,
}

/// Receipt handles of the messages being processed, by the source's own message number:
/// the heartbeat keeps these invisible.
pub type Receipts = Arc<Mutex<HashMap<u64, String>>>;

impl Queue {
    /// Check that the queue exists and may be read. `Err` says what to fix.
    pub async fn connect(
        sdk: &aws_config::SdkConfig,
        url: &str,
        visibility_s: u32,
    ) -> Result<Queue, String> {
        let client = aws_sdk_sqs::Client::new(sdk);
        let attributes = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "`source.queue_url`: cannot read the SQS queue {url}: {}. Check that the queue exists in the region (`source.region`, AWS_REGION) and that the credentials may sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility and sqs:GetQueueAttributes on it.",
                    DisplayErrorContext(e)
                )
            })?;
        let redrive = attributes
            .attributes()
            .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy));
        if !redrive {
            tracing::warn!(
                queue = url,
                "the queue has no redrive policy: a notification whose object is missing or unreadable is received again and again. Give the queue a dead-letter queue (maxReceiveCount 5, say)."
            );
        }
        Ok(Queue {
            client,
            url: url.to_owned(),
            visibility_s: visibility_s as i32,
        })
    }

    /// Up to `max` (at most 10) messages, waiting at most `wait_s` for the first.
    pub async fn receive(&self, max: usize, wait_s: i32) -> Result<Vec<Received>, String> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait_s)
            .visibility_timeout(self.visibility_s)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Received {
                    id: m.message_id.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt: &str) -> Result<(), String> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }

    /// Keep the messages invisible for another visibility timeout.
    async fn extend(&self, receipts: &[String]) {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(self.visibility_s)
                        .build()
                        .ok()
                })
                .collect();
            let result = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) if !out.failed().is_empty() => {
                    tracing::warn!(queue = %self.url, failed = out.failed().len(), "could not keep some messages invisible; another consumer may receive them (their objects are then processed again, to the same keys)");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue = %self.url, error = %DisplayErrorContext(e), "could not keep messages invisible; retrying with the next heartbeat");
                }
            }
        }
    }

    /// Every third of the visibility timeout, extend it for the messages in `receipts`.
    pub fn heartbeat(&self, receipts: Receipts) -> impl Future<Output = ()> + use<> {
        let queue = self.clone();
        let period = Duration::from_secs(u64::from(queue.visibility_s.max(3) as u32) / 3);
        async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let current: Vec<String> = receipts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                if !current.is_empty() {
                    queue.extend(&current).await;
                }
            }
        }
    }
}
