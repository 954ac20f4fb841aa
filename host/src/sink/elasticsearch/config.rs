//! `[sinks.<name>] type = "elasticsearch"`: where the engine is, how to authenticate, how to
//! name indices, and how large a `_bulk` request may grow.

use crate::route::RouteName;
use crate::sink::retry::Backoff;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Routes written by this sink: `cleaned`, and optionally `metrics`, `alerts`, `raw`, `dlq`.
    pub routes: Vec<RouteName>,
    /// Base URLs of the engine's HTTP endpoints; requests rotate over them.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// A single base URL (shorthand for `endpoints = [url]`).
    #[serde(default)]
    pub url: Option<String>,
    /// Which engine it is; `auto` asks the engine.
    #[serde(default)]
    pub engine: EngineChoice,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub index: IndexConfig,
    /// Largest `_bulk` request body, before compression. A batch larger than this is sent
    /// as several requests.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Longest one HTTP request may take before it counts as failed (and is retried).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub compression: bool,
    /// Batches being written at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_batches: usize,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_backoff_ms`.
    #[serde(default = "default_retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// Install the index template and lifecycle policy at start-up if missing or outdated.
    #[serde(default = "default_true")]
    pub install_templates: bool,
    /// Delete indices this many days after rollover (lifecycle policy); 0 keeps them.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    #[default]
    Auto,
    Elasticsearch,
    Opensearch,
}

/// How requests authenticate. Its `Debug` form hides the secrets, so a config printed for
/// diagnosis cannot leak them.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    /// An Elasticsearch API key: the base64 `encoded` form, or `id` and `api_key`.
    ApiKey {
        #[serde(default)]
        encoded: Option<String>,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        api_key: Option<String>,
    },
    /// AWS Signature V4 with the default AWS credential chain (environment, profile,
    /// instance role): Amazon OpenSearch Service (`es`) or Serverless (`aoss`).
    AwsSigv4 {
        region: String,
        #[serde(default = "default_sigv4_service")]
        service: String,
    },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        match self {
            AuthConfig::None => f.write_str("None"),
            AuthConfig::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            AuthConfig::ApiKey {
                encoded,
                id,
                api_key,
            } => f
                .debug_struct("ApiKey")
                .field("encoded", &hidden(encoded))
                .field("id", id)
                .field("api_key", &hidden(api_key))
                .finish(),
            AuthConfig::AwsSigv4 { region, service } => f
                .debug_struct("AwsSigv4")
                .field("region", region)
                .field("service", service)
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the engine's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. For a throw-away test cluster only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// How documents are spread over indices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum IndexConfig {
    /// Data streams `logs-<dataset>-<namespace>` (and `metrics-…`, `logs-<dataset>.alerts-…`).
    DataStream {
        #[serde(default = "default_dataset")]
        dataset: String,
        #[serde(default = "default_namespace")]
        namespace: String,
    },
    /// Plain indices per day of the event time: `<prefix>-YYYY.MM.DD`.
    Daily {
        #[serde(default = "default_prefix")]
        prefix: String,
    },
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig::DataStream {
            dataset: default_dataset(),
            namespace: default_namespace(),
        }
    }
}

fn default_batch_max_bytes() -> usize {
    5 * 1024 * 1024
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_in_flight() -> usize {
    2
}
fn default_retry_initial_backoff_ms() -> u64 {
    100
}
fn default_retry_max_backoff_ms() -> u64 {
    30_000
}
fn default_true() -> bool {
    true
}
fn default_retention_days() -> u32 {
    30
}
fn default_sigv4_service() -> String {
    "es".into()
}
fn default_dataset() -> String {
    "sluice".into()
}
fn default_namespace() -> String {
    "default".into()
}
fn default_prefix() -> String {
    "sluice-logs".into()
}

impl ElasticsearchSinkConfig {
    /// The base URLs, from `endpoints` or `url`.
    pub fn base_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self.endpoints.clone();
        urls.extend(self.url.clone());
        urls.into_iter()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .collect()
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        let urls = self.base_urls();
        if urls.is_empty() {
            return Err((
                "endpoints".into(),
                "name the engine's URL, e.g. endpoints = [\"https://search.example:9200\"] or url = \"…\"".into(),
            ));
        }
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err((
                    "endpoints".into(),
                    format!("`{url}` must start with http:// or https://"),
                ));
            }
        }
        if self.batch_max_bytes < 1024 {
            return Err(("batch_max_bytes".into(), "must be at least 1024".into()));
        }
        if self.request_timeout_ms == 0 {
            return Err(("request_timeout_ms".into(), "must be at least 1".into()));
        }
        if self.max_in_flight_batches == 0 {
            return Err(("max_in_flight_batches".into(), "must be at least 1".into()));
        }
        Backoff::check_keys(self.retry_initial_backoff_ms, self.retry_max_backoff_ms)?;
        self.auth.check()?;
        if let Some(ca) = &self.tls.ca_file
            && ca.as_os_str().is_empty()
        {
            return Err(("tls.ca_file".into(), "must not be empty".into()));
        }
        match &self.index {
            IndexConfig::DataStream { dataset, namespace } => {
                check_name_part(dataset, "index.dataset", true)?;
                check_name_part(namespace, "index.namespace", false)?;
            }
            IndexConfig::Daily { prefix } => check_name_part(prefix, "index.prefix", true)?,
        }
        Ok(())
    }
}

impl AuthConfig {
    fn check(&self) -> Result<(), (String, String)> {
        match self {
            AuthConfig::None => {}
            AuthConfig::Basic { user, .. } if user.is_empty() => {
                return Err(("auth.user".into(), "must not be empty".into()));
            }
            AuthConfig::Basic { .. } => {}
            AuthConfig::ApiKey {
                encoded,
                id,
                api_key,
            } => {
                let pair = id.is_some() && api_key.is_some();
                if encoded.is_some() == pair {
                    return Err((
                        "auth".into(),
                        "give an API key either as `encoded` (the base64 form) or as `id` and `api_key`".into(),
                    ));
                }
            }
            AuthConfig::AwsSigv4 { region, service } => {
                if region.trim().is_empty() {
                    return Err((
                        "auth.region".into(),
                        "must name the AWS region, e.g. \"eu-west-1\"".into(),
                    ));
                }
                if service != "es" && service != "aoss" {
                    return Err((
                        "auth.service".into(),
                        "must be \"es\" (Amazon OpenSearch Service) or \"aoss\" (Serverless)"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Index names are lowercase, and data stream parts may not contain `-` (it separates
/// type, dataset and namespace).
fn check_name_part(value: &str, key: &str, allow_dash: bool) -> Result<(), (String, String)> {
    let ok_char = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '_'
            || c == '.'
            || (allow_dash && c == '-')
    };
    if value.is_empty()
        || value.len() > 100
        || !value.chars().all(ok_char)
        || value.starts_with(['_', '.', '-'])
    {
        let dash = if allow_dash { ", `-`" } else { "" };
        return Err((
            key.into(),
            format!(
                "`{value}` is not usable in an index name: use 1–100 lowercase letters, digits, `_`, `.`{dash}, not starting with `_`, `.` or `-`"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> ElasticsearchSinkConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_to_a_data_stream_and_no_auth() {
        let c = parse("routes = [\"cleaned\"]\nurl = \"http://127.0.0.1:9200/\"");
        assert!(c.check().is_ok());
        assert_eq!(c.base_urls(), vec!["http://127.0.0.1:9200"]);
        assert!(
            matches!(c.index, IndexConfig::DataStream { ref dataset, ref namespace } if dataset == "sluice" && namespace == "default")
        );
        assert!(matches!(c.auth, AuthConfig::None));
    }

    #[test]
    fn checks_name_the_key_at_fault() {
        let key = |extra: &str| {
            parse(&format!(
                "routes = [\"cleaned\"]\nurl = \"http://h:9200\"\n{extra}"
            ))
            .check()
            .unwrap_err()
            .0
        };
        assert_eq!(
            key("index = { mode = \"data_stream\", namespace = \"a-b\" }"),
            "index.namespace"
        );
        assert_eq!(
            key("index = { mode = \"daily\", prefix = \"Logs\" }"),
            "index.prefix"
        );
        assert_eq!(
            key("auth = { type = \"aws_sigv4\", region = \"eu-west-1\", service = \"s3\" }"),
            "auth.service"
        );
        assert_eq!(key("auth = { type = \"api_key\" }"), "auth");
        assert_eq!(key("batch_max_bytes = 10"), "batch_max_bytes");
        let none: ElasticsearchSinkConfig = parse("routes = [\"cleaned\"]");
        assert_eq!(none.check().unwrap_err().0, "endpoints");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<ElasticsearchSinkConfig, _> =
            toml::from_str("routes = [\"cleaned\"]\nurl = \"http://h\"\nmax_retries = 3");
        assert!(r.is_err());
    }
}
