//! Secrets in the config: `${secret:NAME}` (AWS Secrets Manager, NAME a name or an ARN),
//! `${secret:NAME#key}` (one key of a secret holding a JSON object) and `${ssm:/path}` (SSM
//! Parameter Store, decrypted), beside `${VAR}` from the environment.
//!
//! A [`Resolver`] fetches each referenced secret once per config load, with one client per
//! service, from the region and endpoint the AWS environment gives (`AWS_REGION`, the
//! instance's region, `AWS_ENDPOINT_URL`); a config without references makes no AWS call.
//! Every value fetched is also remembered process-wide so [`redact`] can replace it with
//! `<redacted>` wherever text leaves the process: logs, `/metrics`, `sluice validate` and
//! dead-letter reasons. Errors name the reference, never a value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Values shorter than this are not scrubbed from free text: they would scrub ordinary words.
pub const MIN_REDACTED_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "`${{{reference}}}` names no secret: write ${{secret:NAME}}, ${{secret:NAME#json_key}} or ${{ssm:/parameter/path}}"
    )]
    Malformed { reference: String },
    #[error(
        "{service} has no {what} `{id}` in region {region}: check the name (or ARN) and the region (AWS_REGION, or the instance's region)"
    )]
    NotFound {
        service: &'static str,
        what: &'static str,
        id: String,
        region: String,
    },
    #[error(
        "{service} denied reading `{id}`: give the instance role `{action}` on it (and kms:Decrypt on its key if it uses a customer-managed key)"
    )]
    Denied {
        service: &'static str,
        id: String,
        action: &'static str,
    },
    #[error(
        "cannot read `{id}` from {service} in region {region}: {detail}. Check the network, the region and the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID or the instance role)"
    )]
    Failed {
        service: &'static str,
        id: String,
        region: String,
        detail: String,
    },
    #[error(
        "secret `{id}` {problem}, so `#{key}` cannot pick a value from it: store the secret as a JSON object of strings, or leave out `#{key}`"
    )]
    NoKey {
        id: String,
        key: String,
        problem: &'static str,
    },
    #[error("secret `{id}` holds binary data: store it as a string (SecretString)")]
    Binary { id: String },
    #[error("cannot start the client for {service}: {detail}")]
    Runtime {
        service: &'static str,
        detail: String,
    },
}

/// A `${…}` body that names a secret rather than an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    /// Secrets Manager: a secret's name or ARN, and the JSON key to pick, if any.
    Secret { id: &'a str, key: Option<&'a str> },
    /// SSM Parameter Store: a parameter's name (or ARN).
    Parameter { name: &'a str },
}

impl<'a> Reference<'a> {
    /// `Ok(None)` for an environment variable's name.
    pub fn parse(body: &'a str) -> Result<Option<Reference<'a>>, SecretError> {
        let malformed = || SecretError::Malformed {
            reference: body.to_owned(),
        };
        if let Some(rest) = body.strip_prefix("secret:") {
            let (id, key) = match rest.split_once('#') {
                Some((id, key)) => (id, Some(key)),
                None => (rest, None),
            };
            if id.trim().is_empty() || key.is_some_and(|k| k.is_empty()) {
                return Err(malformed());
            }
            Ok(Some(Reference::Secret { id, key }))
        } else if let Some(name) = body.strip_prefix("ssm:") {
            if name.trim().is_empty() {
                return Err(malformed());
            }
            Ok(Some(Reference::Parameter { name }))
        } else {
            Ok(None)
        }
    }
}

/// Fetches the secrets one config load references, each once.
#[derive(Default)]
pub struct Resolver {
    clients: Option<Clients>,
    /// Raw values by `secret:ID` or `ssm:NAME`, so `#key`s of one secret share one fetch.
    fetched: HashMap<String, String>,
    /// Each reference resolved, with the value it gave, in the order first met.
    resolved: Vec<(String, String)>,
}

struct Clients {
    /// Always `Some` until dropped; shut down without blocking, as a config may be loaded
    /// inside another runtime.
    runtime: Option<tokio::runtime::Runtime>,
    region: String,
    secrets: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Resolver {
    /// The value `${body}` stands for: a secret, or the environment variable (`None` when
    /// unset or empty).
    pub fn lookup(&mut self, body: &str) -> Result<Option<String>, SecretError> {
        let Some(reference) = Reference::parse(body)? else {
            return Ok(std::env::var(body).ok().filter(|v| !v.is_empty()));
        };
        let value = match reference {
            Reference::Secret { id, key } => {
                let raw = self.fetch(&format!("secret:{id}"), reference)?;
                match key {
                    Some(key) => json_key(id, key, &raw)?,
                    None => raw,
                }
            }
            Reference::Parameter { .. } => self.fetch(body, reference)?,
        };
        remember(&value);
        if !self.resolved.iter().any(|(r, _)| r == body) {
            self.resolved.push((body.to_owned(), value.clone()));
        }
        Ok(Some(value))
    }

    /// The references resolved and their values (for telling what a reload changed).
    pub fn into_resolved(self) -> Resolved {
        Resolved(self.resolved)
    }

    fn fetch(&mut self, cache_key: &str, reference: Reference) -> Result<String, SecretError> {
        if let Some(raw) = self.fetched.get(cache_key) {
            return Ok(raw.clone());
        }
        if self.clients.is_none() {
            self.clients = Some(Clients::start()?);
        }
        let clients = self.clients.as_ref().expect("started above");
        // On a thread of its own: this may run inside another runtime's worker.
        let raw = std::thread::scope(|s| {
            s.spawn(|| clients.runtime().block_on(clients.get(reference)))
                .join()
                .unwrap_or_else(|_| {
                    Err(SecretError::Runtime {
                        service: "Secrets Manager/SSM",
                        detail: "the request thread panicked".into(),
                    })
                })
        })?;
        self.fetched.insert(cache_key.to_owned(), raw.clone());
        Ok(raw)
    }
}

impl Clients {
    fn start() -> Result<Clients, SecretError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SecretError::Runtime {
                service: "Secrets Manager/SSM",
                detail: e.to_string(),
            })?;
        let sdk = std::thread::scope(|s| {
            s.spawn(|| {
                runtime.block_on(
                    aws_config::defaults(aws_config::BehaviorVersion::latest())
                        .timeout_config(
                            aws_config::timeout::TimeoutConfig::builder()
                                .connect_timeout(Duration::from_secs(5))
                                .operation_attempt_timeout(Duration::from_secs(10))
                                .build(),
                        )
                        .load(),
                )
            })
            .join()
        })
        .map_err(|_| SecretError::Runtime {
            service: "Secrets Manager/SSM",
            detail: "loading the AWS configuration panicked".into(),
        })?;
        let region = sdk
            .region()
            .map_or_else(|| "(none set)".to_owned(), |r| r.to_string());
        Ok(Clients {
            runtime: Some(runtime),
            region,
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            ssm: aws_sdk_ssm::Client::new(&sdk),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("dropped only with the clients")
    }

    async fn get(&self, reference: Reference<'_>) -> Result<String, SecretError> {
        use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
        match reference {
            Reference::Secret { id, .. } => {
                let out = self.secrets.get_secret_value().secret_id(id).send().await;
                let out = out.map_err(|e| {
                    let code = e.code().map(str::to_owned);
                    let detail = aws_sdk_secretsmanager::error::DisplayErrorContext(&e);
                    self.error(SECRETS, id, code.as_deref(), detail.to_string())
                })?;
                match out.secret_string {
                    Some(value) => Ok(value),
                    None => Err(SecretError::Binary { id: id.to_owned() }),
                }
            }
            Reference::Parameter { name } => {
                let out = (self.ssm.get_parameter().name(name))
                    .with_decryption(true)
                    .send()
                    .await;
                let out = out.map_err(|e| {
                    let code = e.code().map(str::to_owned);
                    let detail = aws_sdk_ssm::error::DisplayErrorContext(&e);
                    self.error(SSM, name, code.as_deref(), detail.to_string())
                })?;
                Ok(out.parameter.and_then(|p| p.value).unwrap_or_default())
            }
        }
    }

    fn error(&self, service: Service, id: &str, code: Option<&str>, detail: String) -> SecretError {
        classify(service, id, &self.region, code, detail)
    }
}

/// A failed request as the operator needs it: what to fix, by the error code.
fn classify(
    service: Service,
    id: &str,
    region: &str,
    code: Option<&str>,
    detail: String,
) -> SecretError {
    match code {
        Some("ResourceNotFoundException" | "ParameterNotFound") => SecretError::NotFound {
            service: service.name,
            what: service.what,
            id: id.to_owned(),
            region: region.to_owned(),
        },
        Some("AccessDeniedException" | "AccessDenied") => SecretError::Denied {
            service: service.name,
            id: id.to_owned(),
            action: service.action,
        },
        _ => SecretError::Failed {
            service: service.name,
            id: id.to_owned(),
            region: region.to_owned(),
            detail,
        },
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Clone, Copy)]
struct Service {
    name: &'static str,
    what: &'static str,
    action: &'static str,
}

const SECRETS: Service = Service {
    name: "Secrets Manager",
    what: "secret",
    action: "secretsmanager:GetSecretValue",
};
const SSM: Service = Service {
    name: "SSM Parameter Store",
    what: "parameter",
    action: "ssm:GetParameter",
};

/// The value of `key` in a secret holding a JSON object; the error never shows the secret.
fn json_key(id: &str, key: &str, raw: &str) -> Result<String, SecretError> {
    let no_key = |problem| SecretError::NoKey {
        id: id.to_owned(),
        key: key.to_owned(),
        problem,
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|_| no_key("is not a JSON object"))?;
    match object.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(no_key("holds no string or number under that key")),
        None => Err(no_key("has no such key")),
    }
}

/// The secrets one config load resolved: reference (`secret:…`, `ssm:…`) and value. Its
/// `Debug` form shows the references only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Resolved(Vec<(String, String)>);

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(r, _)| r))
            .finish()
    }
}

impl Resolved {
    /// The references.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(r, _)| r.as_str())
    }

    /// The references whose values are too short to be scrubbed from free text.
    pub fn short(&self) -> impl Iterator<Item = &str> {
        (self.0.iter())
            .filter(|(_, v)| v.len() < MIN_REDACTED_LEN)
            .map(|(r, _)| r.as_str())
    }

    /// The references whose value differs in `fresh` (or that only `fresh` has).
    pub fn changed_in<'a>(&self, fresh: &'a Resolved) -> Vec<&'a str> {
        (fresh.0.iter())
            .filter(|(r, v)| !self.0.iter().any(|(r2, v2)| r2 == r && v2 == v))
            .map(|(r, _)| r.as_str())
            .collect()
    }
}

static ANY: AtomicBool = AtomicBool::new(false);
static VALUES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remember a secret's value (and the escaped forms it is printed in) for [`redact`].
pub fn remember(value: &str) {
    if value.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut values = VALUES.write().unwrap_or_else(|e| e.into_inner());
    let debug = format!("{value:?}");
    for form in [value, &debug[1..debug.len() - 1]] {
        if !values.iter().any(|v| v == form) {
            values.push(form.to_owned());
        }
    }
    // Longest first, so a value containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    ANY.store(true, Ordering::Release);
}

/// `text` with every remembered secret value replaced by `<redacted>`. Borrows when the
/// process resolved no secret (one atomic load) or the text holds none.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !ANY.load(Ordering::Acquire) {
        return Cow::Borrowed(text);
    }
    let values = VALUES.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for value in values.iter() {
        if out.contains(value.as_str()) {
            out = Cow::Owned(out.replace(value.as_str(), REDACTED));
        }
    }
    out
}

/// A log writer that redacts secret values from each line before it reaches `inner`.
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !ANY.load(Ordering::Acquire) {
            return self.0.write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_told_from_variables() {
        assert_eq!(Reference::parse("HOME").unwrap(), None);
        assert_eq!(
            Reference::parse("secret:prod/search").unwrap(),
            Some(Reference::Secret {
                id: "prod/search",
                key: None
            })
        );
        let arn =
            "secret:arn:aws:secretsmanager:eu-west-1:123456789012:secret:search-AbCdEf#password";
        assert_eq!(
            Reference::parse(arn).unwrap(),
            Some(Reference::Secret {
                id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:search-AbCdEf",
                key: Some("password")
            })
        );
        assert_eq!(
            Reference::parse("ssm:/sluice/admin-token").unwrap(),
            Some(Reference::Parameter {
                name: "/sluice/admin-token"
            })
        );
        for bad in ["secret:", "secret: ", "secret:x#", "ssm:"] {
            let msg = Reference::parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad) && msg.contains("${secret:NAME}"), "{msg}");
        }
    }

    #[test]
    fn each_failure_says_what_to_try() {
        let text = |service, code| {
            classify(
                service,
                "prod/x",
                "eu-west-1",
                code,
                "dispatch failure".into(),
            )
            .to_string()
        };
        let missing = text(SSM, Some("ParameterNotFound"));
        assert!(
            missing.contains("SSM Parameter Store has no parameter `prod/x` in region eu-west-1"),
            "{missing}"
        );
        let denied = text(SECRETS, Some("AccessDeniedException"));
        assert!(
            denied.contains("give the instance role `secretsmanager:GetSecretValue` on it"),
            "{denied}"
        );
        let other = text(SECRETS, None);
        assert!(
            other.contains("dispatch failure") && other.contains("Check the network, the region"),
            "{other}"
        );
    }

    #[test]
    fn a_json_key_is_picked_and_errors_never_show_the_secret() {
        let raw = r#"{"user":"sluice","password":"hunter2-xyz","port":9200}"#;
        assert_eq!(json_key("s", "password", raw).unwrap(), "hunter2-xyz");
        assert_eq!(json_key("s", "port", raw).unwrap(), "9200");
        let missing = json_key("s", "token", raw).unwrap_err().to_string();
        assert!(missing.contains("`s` has no such key") && missing.contains("#token"));
        assert!(!missing.contains("hunter2"), "{missing}");
        let not_json = json_key("s", "k", "hunter2-xyz").unwrap_err().to_string();
        assert!(not_json.contains("is not a JSON object"), "{not_json}");
        assert!(!not_json.contains("hunter2"), "{not_json}");
    }

    #[test]
    fn remembered_values_are_redacted_in_their_printed_forms() {
        remember("q\"uoted-s3cret");
        remember("sluice");
        let text = format!("a {} b {:?} c sluice", "q\"uoted-s3cret", "q\"uoted-s3cret");
        assert_eq!(
            redact(&text),
            "a <redacted> b \"<redacted>\" c sluice",
            "short values stay"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_reload_tells_which_references_changed() {
        let old = Resolved(vec![
            ("secret:a".into(), "1".into()),
            ("ssm:/b".into(), "2".into()),
        ]);
        let new = Resolved(vec![
            ("secret:a".into(), "1".into()),
            ("ssm:/b".into(), "3".into()),
        ]);
        assert_eq!(old.changed_in(&new), vec!["ssm:/b"]);
        assert!(format!("{new:?}").contains("ssm:/b") && !format!("{new:?}").contains('3'));
    }
}
