//! How every Kafka client of the host reaches its brokers: TLS (with a client certificate
//! for mutual TLS), SASL with a password (PLAIN, SCRAM) or SASL/OAUTHBEARER with a token
//! the host makes and refreshes itself (Amazon MSK IAM, or unsecured tokens for a
//! development broker).
//!
//! One `security` table per part that talks to Kafka — `[source.security]` and
//! `[sinks.<name>.security]` — checked at start ([`KafkaSecurity::check`]) and applied to a
//! librdkafka config in one call ([`KafkaSecurity::apply`]) by every client site: the
//! consumer, the state topic's clients, the sinks' and the transactional producer, topic
//! administration. OAUTHBEARER tokens come through librdkafka's refresh event:
//! each client context holds an [`OAuth`] that answers it.

mod msk_iam;
mod oauth;

pub use msk_iam::MskIamSigner;
pub use oauth::{OAuth, TokenContext, TokenProvider, refusal};

use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `security` table of a Kafka source or sink. Its `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// How the connection is made; when unset, `sasl_tls` if SASL is configured, `tls` if a
    /// certificate is, else `plaintext`.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// The CA certificate(s) (PEM) the brokers' certificates are checked against; the
    /// system's trust store when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM) for mutual TLS, with its private key in `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// For PLAIN and SCRAM; with `auth = "unsecured_jwt"` the token's subject.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Where OAUTHBEARER tokens come from.
    #[serde(default)]
    pub auth: Option<TokenAuth>,
    /// MSK IAM: the cluster's region; the default AWS chain's region when unset.
    #[serde(default)]
    pub region: Option<String>,
    /// `unsecured_jwt`: how long each token lives. librdkafka asks for the next one at
    /// 80 % of it (on a one-second timer) and re-authenticates each connection at 90 % of
    /// its session, so a shorter life than 15 s has connections re-authenticating with the
    /// old token, which the broker then refuses.
    #[serde(default)]
    pub token_lifetime_ms: Option<u64>,
}

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("username", &self.username)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::secrets::REDACTED),
            )
            .field("auth", &self.auth)
            .field("region", &self.region)
            .field("token_lifetime_ms", &self.token_lifetime_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Plaintext,
    Tls,
    SaslPlaintext,
    SaslTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "plain")]
    Plain,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "oauthbearer")]
    OAuthBearer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// Amazon MSK IAM: a SigV4-signed token from the instance's AWS credentials.
    AwsMskIam,
    /// An unsigned (`alg: none`) token, accepted only by a broker running Kafka's
    /// unsecured validator: for development and tests, never production.
    UnsecuredJwt,
}

/// The librdkafka properties the table sets; a part's raw `options` may not set them too.
const OWNED_OPTIONS: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.config",
    "enable.sasl.oauthbearer.unsecure.jwt",
];

/// Longest `unsecured_jwt` token lifetime by default: an hour.
const DEFAULT_TOKEN_LIFETIME_MS: u64 = 3_600_000;

impl Protocol {
    fn librdkafka(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Tls => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslTls => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Tls | Protocol::SaslTls)
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslTls)
    }
}

impl SaslMechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

type Invalid = (String, String);

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    (format!("security.{key}"), message.into())
}

impl KafkaSecurity {
    /// Nothing configured: the client is left as librdkafka (and `options`) make it.
    pub fn is_unset(&self) -> bool {
        *self == KafkaSecurity::default()
    }

    /// The mechanism, `auth` implying OAUTHBEARER.
    fn mechanism(&self) -> Option<SaslMechanism> {
        self.sasl_mechanism
            .or(self.auth.map(|_| SaslMechanism::OAuthBearer))
    }

    /// The protocol, inferred when unset.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(if self.mechanism().is_some() {
            Protocol::SaslTls
        } else if self.ca_file.is_some() || self.cert_file.is_some() {
            Protocol::Tls
        } else {
            Protocol::Plaintext
        })
    }

    /// Check the table against itself, the files it names and the part's raw `options`.
    /// Keys in errors are relative to the part (`security.password`, `options."…"`).
    pub fn check(&self, options: &BTreeMap<String, String>) -> Result<(), Invalid> {
        if self.is_unset() {
            return Ok(());
        }
        if let Some(key) = OWNED_OPTIONS.iter().find(|k| options.contains_key(**k)) {
            return Err((
                format!("options.\"{key}\""),
                "is set by the `security` table; remove it from `options` and say it in `security` (protocol, ca_file, cert_file, key_file, sasl_mechanism, username, password, auth)".into(),
            ));
        }
        self.check_tls()?;
        self.check_sasl()
    }

    fn check_tls(&self) -> Result<(), Invalid> {
        let protocol = self.protocol();
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            let Some(path) = path else { continue };
            if !protocol.tls() {
                return Err(invalid(
                    key,
                    format!(
                        "needs TLS, but `security.protocol` is `{}`; use `tls` or `sasl_tls`",
                        protocol.librdkafka()
                    ),
                ));
            }
            readable(key, path)?;
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(invalid(
                "key_file",
                "is missing: `cert_file` needs the private key of its certificate (PEM)",
            )),
            (None, Some(_)) => Err(invalid(
                "cert_file",
                "is missing: `key_file` needs the client certificate it belongs to (PEM)",
            )),
            _ => Ok(()),
        }
    }

    fn check_sasl(&self) -> Result<(), Invalid> {
        let protocol = self.protocol();
        let Some(mechanism) = self.mechanism() else {
            if protocol.sasl() {
                return Err(invalid(
                    "sasl_mechanism",
                    "is missing: say which SASL mechanism (`plain`, `scram-sha-256`, `scram-sha-512`, `oauthbearer`), or `auth = \"aws_msk_iam\"`",
                ));
            }
            for (key, set) in [
                ("username", self.username.is_some()),
                ("password", self.password.is_some()),
                ("region", self.region.is_some()),
                ("token_lifetime_ms", self.token_lifetime_ms.is_some()),
            ] {
                if set {
                    return Err(invalid(key, "is only used with SASL; set `sasl_mechanism`"));
                }
            }
            return Ok(());
        };
        if !protocol.sasl() {
            return Err(invalid(
                "protocol",
                format!(
                    "is `{}`, but `sasl_mechanism` needs `sasl_tls` (or `sasl_plaintext`)",
                    protocol.librdkafka()
                ),
            ));
        }
        match mechanism {
            SaslMechanism::OAuthBearer => self.check_token(protocol),
            _ => self.check_password(mechanism),
        }
    }

    fn check_password(&self, mechanism: SaslMechanism) -> Result<(), Invalid> {
        let name = mechanism.librdkafka();
        if self.auth.is_some() {
            return Err(invalid(
                "auth",
                format!("makes OAUTHBEARER tokens, but `sasl_mechanism` is {name}; remove one"),
            ));
        }
        if self.username.as_deref().is_none_or(|u| u.is_empty()) {
            return Err(invalid(
                "username",
                format!("is missing: {name} needs a user"),
            ));
        }
        if self.password.as_deref().is_none_or(|p| p.is_empty()) {
            return Err(invalid(
                "password",
                format!(
                    "is missing: {name} needs the user's password (from the environment: password = \"${{KAFKA_PASSWORD}}\")"
                ),
            ));
        }
        for (key, set) in [
            ("region", self.region.is_some()),
            ("token_lifetime_ms", self.token_lifetime_ms.is_some()),
        ] {
            if set {
                return Err(invalid(key, format!("is not used with {name}; remove it")));
            }
        }
        Ok(())
    }

    fn check_token(&self, protocol: Protocol) -> Result<(), Invalid> {
        let Some(auth) = self.auth else {
            return Err(invalid(
                "auth",
                "is missing: OAUTHBEARER tokens come from `auth = \"aws_msk_iam\"` (Amazon MSK)",
            ));
        };
        if self.password.is_some() {
            return Err(invalid(
                "password",
                "is not used with OAUTHBEARER; remove it",
            ));
        }
        match auth {
            TokenAuth::AwsMskIam => {
                if !protocol.tls() {
                    return Err(invalid(
                        "protocol",
                        "must be `sasl_tls` with MSK IAM: the brokers take IAM only over TLS (port 9098, or 9198 from outside the VPC)",
                    ));
                }
                if self.username.is_some() || self.token_lifetime_ms.is_some() {
                    return Err(invalid(
                        if self.username.is_some() {
                            "username"
                        } else {
                            "token_lifetime_ms"
                        },
                        "is not used with MSK IAM (the identity is the instance's AWS role); remove it",
                    ));
                }
                if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
                    return Err(invalid("region", "must name a region, e.g. `eu-west-1`"));
                }
            }
            TokenAuth::UnsecuredJwt => {
                if self.region.is_some() {
                    return Err(invalid("region", "is only used with MSK IAM; remove it"));
                }
                if self.token_lifetime_ms.is_some_and(|ms| ms < 15_000) {
                    return Err(invalid(
                        "token_lifetime_ms",
                        "must be at least 15000: shorter tokens expire before librdkafka re-authenticates with the next one",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Set the table's librdkafka properties on `client`.
    pub fn apply(&self, client: &mut ClientConfig) {
        if self.is_unset() {
            return;
        }
        client.set("security.protocol", self.protocol().librdkafka());
        for (key, path) in [
            ("ssl.ca.location", &self.ca_file),
            ("ssl.certificate.location", &self.cert_file),
            ("ssl.key.location", &self.key_file),
        ] {
            if let Some(path) = path {
                client.set(key, path.to_string_lossy());
            }
        }
        if let Some(mechanism) = self.mechanism() {
            client.set("sasl.mechanism", mechanism.librdkafka());
        }
        if let Some(user) = &self.username
            && self.auth.is_none()
        {
            client.set("sasl.username", user);
        }
        if let Some(password) = &self.password {
            client.set("sasl.password", password);
        }
    }

    /// What answers the OAUTHBEARER refresh events of `part`'s clients (`source`,
    /// `sinks.<name>`), when tokens are the host's to make. MSK IAM resolves the region and
    /// the AWS credentials now, so a host without them does not start.
    pub fn oauth(&self, part: &str) -> Result<OAuth, SecurityError> {
        if self.mechanism() != Some(SaslMechanism::OAuthBearer) {
            return Ok(OAuth::none());
        }
        let provider = match self.auth {
            Some(TokenAuth::AwsMskIam) => TokenProvider::msk_iam(part, self.region.as_deref())?,
            Some(TokenAuth::UnsecuredJwt) => TokenProvider::unsecured(
                part,
                self.username.as_deref().unwrap_or("sluice"),
                std::time::Duration::from_millis(
                    self.token_lifetime_ms.unwrap_or(DEFAULT_TOKEN_LIFETIME_MS),
                ),
            ),
            None => return Ok(OAuth::none()),
        };
        Ok(OAuth::new(provider))
    }
}

fn readable(key: &str, path: &Path) -> Result<(), Invalid> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            format!("{} is not a file; give a PEM file", path.display()),
        )),
        Err(e) => Err(invalid(
            key,
            format!(
                "cannot read {}: {e}. Check the path (relative paths start at the host's working directory)",
                path.display()
            ),
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "MSK IAM: no AWS region for the cluster. Set `security.region` (e.g. \"eu-west-1\") or AWS_REGION"
    )]
    NoRegion,
    #[error(
        "MSK IAM: no AWS credentials: {0}. Give the instance a role (instance profile), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    )]
    NoCredentials(String),
    #[error("MSK IAM: cannot sign the token: {0}")]
    Sign(String),
    #[error("cannot start the token refresher: {0}")]
    Runtime(String),
}

/// The advice added to a Kafka authentication failure, naming the keys to look at.
pub fn authentication_hint(part: &str, security: &KafkaSecurity) -> String {
    match security.mechanism() {
        Some(SaslMechanism::OAuthBearer) => format!(
            "check `{part}.security.auth`: the brokers refused the host's OAUTHBEARER token (MSK IAM: the instance role needs kafka-cluster:Connect on the cluster, and `{part}.security.region` must be the cluster's)"
        ),
        Some(m) => format!(
            "check `{part}.security.username` and `{part}.security.password`: the brokers refused them ({})",
            m.librdkafka()
        ),
        None => format!(
            "check `{part}.security` (and `{part}.brokers`: is this the listener for that protocol?)"
        ),
    }
}

#[cfg(test)]
mod tests;
