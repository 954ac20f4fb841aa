//! `[source] type = "s3"`: the SQS queue S3 event notifications arrive on, where done
//! markers go, how objects are read, and the shared batching and decoding keys.

use crate::codec::InvalidJson;
use crate::lake::layout::parse_s3_url;
use crate::source::kafka::defaults;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// The SQS queue the bucket's `s3:ObjectCreated:*` notifications are sent to.
    pub queue_url: String,
    /// AWS region; by default the environment's (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint for S3 and SQS (a local emulator); S3 is then addressed path-style.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `s3://bucket/prefix/` under which a marker per processed object is written; by
    /// default `s3://<the object's bucket>/_sluice/done/`.
    #[serde(default)]
    pub state_prefix: Option<String>,
    #[serde(default)]
    pub format: ObjectFormat,
    /// Most SQS messages received and not yet deleted (each names one object, usually).
    #[serde(default = "default_in_flight")]
    pub max_messages_in_flight: usize,
    /// How long a received message stays invisible to other consumers; extended every
    /// third of it while its object is processed.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_s: u32,
    #[serde(default = "defaults::batch_max_records")]
    pub batch_max_records: usize,
    #[serde(default = "defaults::batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Longer lines are dead-lettered (only this many bytes of them are kept).
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub invalid_json: InvalidJson,
}

/// How an object's lines are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// The lake's raw envelope if the first line is one, else NDJSON.
    #[default]
    Auto,
    /// Each line is a message.
    Ndjson,
    /// Each line is a raw envelope (`sluice`'s `raw` table) and keeps the origin it carries.
    RawEnvelope,
}

fn default_in_flight() -> usize {
    10
}

fn default_visibility() -> u32 {
    300
}

/// SQS's longest visibility timeout: 12 hours.
const MAX_VISIBILITY_S: u32 = 43_200;

impl S3SourceConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: &str| Err((key.to_owned(), msg.to_owned()));
        if !(self.queue_url.starts_with("https://") || self.queue_url.starts_with("http://")) {
            return err(
                "queue_url",
                "must be an SQS queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/logs-objects",
            );
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return err("endpoint", "must be a URL such as http://127.0.0.1:4566");
        }
        if let Some(prefix) = &self.state_prefix
            && parse_s3_url(prefix).is_none()
        {
            return err(
                "state_prefix",
                "must be an s3:// URL such as s3://my-bucket/_sluice/done/",
            );
        }
        if self.max_messages_in_flight == 0 {
            return err("max_messages_in_flight", "must be at least 1");
        }
        if !(3..=MAX_VISIBILITY_S).contains(&self.visibility_timeout_s) {
            return err(
                "visibility_timeout_s",
                "must be between 3 and 43200 (SQS's limit); it is extended every third of it while an object is processed",
            );
        }
        Ok(())
    }

    /// The bucket and key prefix of the done marker of objects in `bucket`.
    pub fn state_location(&self, bucket: &str) -> (String, String) {
        match self.state_prefix.as_deref().and_then(parse_s3_url) {
            Some((state_bucket, prefix)) => {
                let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                    prefix
                } else {
                    format!("{prefix}/")
                };
                (state_bucket, prefix)
            }
            None => (bucket.to_owned(), "_sluice/done/".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<S3SourceConfig, toml::de::Error> {
        toml::from_str(&format!(
            "queue_url = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\n{extra}"
        ))
    }

    #[test]
    fn checks_name_the_key_at_fault() {
        assert!(config("").unwrap().check().is_ok());
        let key = |extra: &str| config(extra).unwrap().check().unwrap_err().0;
        assert_eq!(key("visibility_timeout_s = 1"), "visibility_timeout_s");
        assert_eq!(key("max_messages_in_flight = 0"), "max_messages_in_flight");
        assert_eq!(key("state_prefix = \"bucket/done\""), "state_prefix");
        assert_eq!(key("endpoint = \"localhost:4566\""), "endpoint");
        assert!(config("queue = \"x\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn markers_go_next_to_the_objects_unless_a_state_prefix_is_set() {
        let c = config("").unwrap();
        assert_eq!(
            c.state_location("logs"),
            ("logs".into(), "_sluice/done/".into())
        );
        let c = config("state_prefix = \"s3://state/sluice/done\"").unwrap();
        assert_eq!(
            c.state_location("logs"),
            ("state".into(), "sluice/done/".into())
        );
    }
}
