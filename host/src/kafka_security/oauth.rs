//! OAUTHBEARER tokens for librdkafka's refresh event (`ClientContext::generate_oauth_token`):
//! librdkafka asks for one at start and again at 80 % of the last one's lifetime, on the
//! thread that polls the client.

use super::SecurityError;
use super::msk_iam::MskIamSigner;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use base64::Engine;
use rdkafka::client::{Client, OAuthToken};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, ClientContext};
use std::error::Error;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What a client context answers librdkafka's refresh events with: nothing when the
/// client does not use OAUTHBEARER tokens of the host's making. Cheap to clone.
#[derive(Clone, Default)]
pub struct OAuth(Option<Arc<TokenProvider>>);

impl OAuth {
    pub fn none() -> OAuth {
        OAuth(None)
    }

    pub fn new(provider: TokenProvider) -> OAuth {
        OAuth(Some(Arc::new(provider)))
    }

    /// The token for librdkafka's refresh event.
    pub fn generate(&self) -> Result<OAuthToken, Box<dyn Error>> {
        match &self.0 {
            Some(provider) => Ok(provider.token()?),
            None => Err(
                "this Kafka client has no token provider: set `security.auth` instead of OAUTHBEARER in `options`"
                    .into(),
            ),
        }
    }

    /// Give a client whose main queue nobody polls (librdkafka's admin clients) its token
    /// now. It is not refreshed: such clients live for a few requests at start, far
    /// shorter than a token.
    pub fn seed<C: ClientContext>(&self, client: &Client<C>) -> Result<(), String> {
        if self.0.is_none() {
            return Ok(());
        }
        let token = self.generate().map_err(|e| e.to_string())?;
        let value = CString::new(token.token).map_err(|e| e.to_string())?;
        let principal = CString::new(token.principal_name).map_err(|e| e.to_string())?;
        let mut err = [0 as std::ffi::c_char; 512];
        // SAFETY: the client pointer is live for the borrow; the strings and the error
        // buffer outlive the call, which copies what it keeps.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_oauthbearer_set_token(
                client.native_ptr(),
                value.as_ptr(),
                token.lifetime_ms,
                principal.as_ptr(),
                std::ptr::null_mut(),
                0,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        // SAFETY: librdkafka wrote a NUL-terminated message into the buffer.
        let message = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        Err(message.to_string_lossy().into_owned())
    }

    /// How many tokens have been made (for tests and logs).
    pub fn made(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |p| p.made.load(Ordering::Relaxed))
    }
}

/// The context of admin clients and plain consumers: their tokens, and whether the
/// brokers refused their credentials (which otherwise surfaces as a timeout).
#[derive(Default)]
pub struct TokenContext {
    oauth: OAuth,
    refused: Mutex<Option<String>>,
}

impl TokenContext {
    pub fn new(oauth: OAuth) -> TokenContext {
        TokenContext {
            oauth,
            refused: Mutex::new(None),
        }
    }

    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    /// Why the brokers refused to authenticate the client, if they did.
    pub fn refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for TokenContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        self.oauth.generate()
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let KafkaError::Global(RDKafkaErrorCode::Authentication) = error {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            refused.get_or_insert_with(|| reason.to_owned());
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for TokenContext {}

/// Why the brokers refuse the credentials of `config`, if they do: asked after an admin
/// client failed, which cannot say so itself (nobody polls its errors), so that the
/// error names the credentials rather than a transport failure.
pub fn refusal(config: &ClientConfig, oauth: &OAuth) -> Option<String> {
    let mut config = config.clone();
    config.remove("group.id");
    let probe: BaseConsumer<TokenContext> = config
        .create_with_context(TokenContext::new(oauth.clone()))
        .ok()?;
    oauth.seed(probe.client()).ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if probe
            .fetch_metadata(None, Duration::from_millis(500))
            .is_ok()
        {
            return None;
        }
        // Polling hands the client's errors to its context.
        let _ = probe.poll(Duration::from_millis(100));
        if let Some(reason) = probe.context().refused() {
            return Some(reason);
        }
    }
    None
}

/// Makes OAUTHBEARER tokens.
pub struct TokenProvider {
    /// Whose clients it serves, for the log.
    part: String,
    kind: Kind,
    made: AtomicU64,
}

enum Kind {
    MskIam {
        signer: MskIamSigner,
        credentials: SharedCredentialsProvider,
        /// The AWS credential chain is async; tokens are asked for on librdkafka's
        /// threads and inside the host's runtime alike, so it runs on its own.
        runtime: Runtime,
    },
    Unsecured {
        principal: String,
        lifetime: Duration,
    },
}

impl TokenProvider {
    /// Amazon MSK IAM tokens from the default AWS credential chain. The region and the
    /// credentials are resolved now: a host without them fails at start.
    pub fn msk_iam(part: &str, region: Option<&str>) -> Result<TokenProvider, SecurityError> {
        let runtime = Runtime::new()?;
        let region = region.map(str::to_owned);
        let (region, credentials) = runtime.run(async move {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(region) = region {
                loader = loader.region(aws_config::Region::new(region));
            }
            let sdk = loader.load().await;
            let region = sdk.region().ok_or(SecurityError::NoRegion)?.to_string();
            let credentials = sdk.credentials_provider().ok_or_else(|| {
                SecurityError::NoCredentials("no credential provider is configured".into())
            })?;
            credentials
                .provide_credentials()
                .await
                .map_err(|e| SecurityError::NoCredentials(e.to_string()))?;
            Ok::<_, SecurityError>((region, credentials))
        })??;
        tracing::info!(%region, "Kafka: MSK IAM authentication with the AWS credential chain");
        Ok(TokenProvider {
            part: part.to_owned(),
            kind: Kind::MskIam {
                signer: MskIamSigner::new(&region),
                credentials,
                runtime,
            },
            made: AtomicU64::new(0),
        })
    }

    /// Unsigned tokens for `principal`, each living `lifetime`.
    pub fn unsecured(part: &str, principal: &str, lifetime: Duration) -> TokenProvider {
        TokenProvider {
            part: part.to_owned(),
            kind: Kind::Unsecured {
                principal: principal.to_owned(),
                lifetime,
            },
            made: AtomicU64::new(0),
        }
    }

    pub fn token(&self) -> Result<OAuthToken, SecurityError> {
        let now = SystemTime::now();
        let (token, principal, expiry) = match &self.kind {
            Kind::MskIam {
                signer,
                credentials,
                runtime,
            } => {
                let provider = credentials.clone();
                let credentials = runtime
                    .run(async move { provider.provide_credentials().await })?
                    .map_err(|e| SecurityError::NoCredentials(e.to_string()))?;
                let (token, expiry) = signer.token(&credentials, now)?;
                (token, "aws_msk_iam".to_owned(), expiry)
            }
            Kind::Unsecured {
                principal,
                lifetime,
            } => {
                let (token, expiry) = unsecured_jwt(principal, now, *lifetime);
                (token, principal.clone(), expiry)
            }
        };
        let lifetime_ms = expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| SecurityError::Sign(e.to_string()))?
            .as_millis() as i64;
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            part = %self.part,
            principal = %principal,
            made,
            expires_in_s = expiry.duration_since(now).unwrap_or_default().as_secs(),
            "Kafka: OAUTHBEARER token made"
        );
        Ok(OAuthToken {
            token,
            principal_name: principal,
            lifetime_ms,
        })
    }
}

/// An unsecured JWS (RFC 7515 with `alg: none`, as Kafka's
/// `OAuthBearerUnsecuredJws` reads it): `header.claims.` with an empty signature.
fn unsecured_jwt(principal: &str, now: SystemTime, lifetime: Duration) -> (String, SystemTime) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let exp = iat + lifetime.as_secs().max(1);
    let claims = serde_json::json!({ "sub": principal, "iat": iat, "exp": exp });
    let token = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none"}"#),
        b64.encode(claims.to_string())
    );
    (token, SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

/// A one-thread runtime of its own, usable from any thread, async or not.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> Result<Runtime, SecurityError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kafka-oauth")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
            .map_err(|e| SecurityError::Runtime(e.to_string()))
    }

    fn run<F>(&self, future: F) -> Result<F::Output, SecurityError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.0.as_ref().expect("present until dropped");
        futures::executor::block_on(rt.spawn(future))
            .map_err(|e| SecurityError::Runtime(e.to_string()))
    }
}

impl Drop for Runtime {
    /// Dropped wherever the last client goes, perhaps inside the host's runtime, where a
    /// blocking shutdown would panic.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsecured_tokens_carry_subject_and_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (token, expiry) = unsecured_jwt("alice", now, Duration::from_secs(5));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "", "no signature");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(b64.decode(parts[0]).unwrap(), br#"{"alg":"none"}"#);
        let claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_000_005u64);
        assert_eq!(expiry, now + Duration::from_secs(5));
    }

    #[test]
    fn provider_counts_tokens() {
        let oauth = OAuth::new(TokenProvider::unsecured(
            "source",
            "bob",
            Duration::from_secs(60),
        ));
        let token = oauth.generate().unwrap();
        assert_eq!(token.principal_name, "bob");
        assert!(token.lifetime_ms > 0);
        oauth.generate().unwrap();
        assert_eq!(oauth.made(), 2);
        assert!(OAuth::none().generate().is_err());
    }
}
