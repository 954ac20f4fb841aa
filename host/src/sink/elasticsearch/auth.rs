//! Request authentication (basic, API key, AWS SigV4) and the TLS setup of the HTTP client.

use super::config::{AuthConfig, TlsConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read tls.ca_file {path}: {source}. Check the path.")]
    ReadCa {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "tls.ca_file {path} holds no usable PEM certificate ({message}). Give the CA certificate in PEM form."
    )]
    BadCa { path: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error(
        "no AWS credentials found for SigV4 signing: {0}. Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role."
    )]
    NoCredentials(String),
    #[error("cannot sign the request with SigV4: {0}")]
    Sign(String),
    #[error(
        "the credentials in `auth` make an invalid `{0}` header (control characters?). Check `auth`."
    )]
    InvalidHeader(String),
}

/// How each request is authenticated.
pub enum Auth {
    None,
    /// A fixed `Authorization` header value (basic or API key).
    Header(String),
    Sigv4(Sigv4Signer),
}

impl Auth {
    pub async fn from_config(config: &AuthConfig) -> Result<Auth, AuthError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(match config {
            AuthConfig::None => Auth::None,
            AuthConfig::Basic { user, password } => Auth::Header(format!(
                "Basic {}",
                b64.encode(format!("{user}:{password}"))
            )),
            AuthConfig::ApiKey {
                encoded,
                id,
                api_key,
            } => {
                let encoded = match (encoded, id, api_key) {
                    (Some(encoded), _, _) => encoded.clone(),
                    (None, Some(id), Some(key)) => b64.encode(format!("{id}:{key}")),
                    _ => String::new(),
                };
                Auth::Header(format!("ApiKey {encoded}"))
            }
            AuthConfig::AwsSigv4 { region, service } => {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(region.clone()))
                    .load()
                    .await;
                let provider = sdk.credentials_provider().ok_or_else(|| {
                    AuthError::NoCredentials("no credential provider is configured".into())
                })?;
                Auth::Sigv4(Sigv4Signer {
                    region: region.clone(),
                    service: service.clone(),
                    provider,
                    cached: Mutex::new(None),
                })
            }
        })
    }

    /// Headers to add to a request with this method, URL, headers and body.
    pub async fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, AuthError> {
        match self {
            Auth::None => Ok(Vec::new()),
            Auth::Header(value) => Ok(vec![("authorization".into(), value.clone())]),
            Auth::Sigv4(signer) => signer.sign(method, url, headers, body).await,
        }
    }
}

/// SigV4 for Amazon OpenSearch Service (`es`) and Serverless (`aoss`).
pub struct Sigv4Signer {
    region: String,
    service: String,
    provider: SharedCredentialsProvider,
    /// Credentials are fetched once and refreshed shortly before they expire.
    cached: Mutex<Option<Credentials>>,
}

impl Sigv4Signer {
    #[cfg(test)]
    pub fn fixed(region: &str, service: &str, credentials: Credentials) -> Sigv4Signer {
        Sigv4Signer {
            region: region.into(),
            service: service.into(),
            provider: SharedCredentialsProvider::new(credentials.clone()),
            cached: Mutex::new(Some(credentials)),
        }
    }

    async fn credentials(&self) -> Result<Credentials, AuthError> {
        let mut cached = self.cached.lock().await;
        let fresh = cached.as_ref().is_some_and(|c| {
            c.expiry()
                .is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300))
        });
        if !fresh {
            let credentials = self
                .provider
                .provide_credentials()
                .await
                .map_err(|e| AuthError::NoCredentials(e.to_string()))?;
            *cached = Some(credentials);
        }
        Ok(cached.clone().expect("set above"))
    }

    pub async fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, AuthError> {
        let identity = self.credentials().await?.into();
        let mut settings = SigningSettings::default();
        // Serverless requires the payload hash header; the managed service accepts it.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| AuthError::Sign(e.to_string()))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| AuthError::Sign(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| AuthError::Sign(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }
}

/// The HTTP client: TLS roots (plus a custom CA), timeouts, response decompression.
pub fn http_client(tls: &TlsConfig, timeout: Duration) -> Result<reqwest::Client, AuthError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(50))
        .danger_accept_invalid_certs(tls.insecure_skip_verify);
    if let Some(path) = &tls.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| AuthError::ReadCa {
            path: shown.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| AuthError::BadCa {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(AuthError::BadCa {
                path: shown,
                message: "no certificate found".into(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| AuthError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_the_auth_config_hides_the_secrets() {
        let basic = format!(
            "{:?}",
            AuthConfig::Basic {
                user: "elastic".into(),
                password: "hunter2".into(),
            }
        );
        assert!(
            basic.contains("elastic") && !basic.contains("hunter2"),
            "{basic}"
        );
        let key = format!(
            "{:?}",
            AuthConfig::ApiKey {
                encoded: Some("ZW5jb2RlZA==".into()),
                id: Some("key-id".into()),
                api_key: Some("k3y".into()),
            }
        );
        assert!(key.contains("key-id"), "{key}");
        assert!(
            !key.contains("ZW5jb2RlZA==") && !key.contains("k3y"),
            "{key}"
        );
    }

    #[tokio::test]
    async fn basic_and_api_key_headers() {
        let basic = Auth::from_config(&AuthConfig::Basic {
            user: "elastic".into(),
            password: "secret".into(),
        })
        .await
        .unwrap();
        let h = basic.headers("GET", "http://h/", &[], b"").await.unwrap();
        assert_eq!(
            h,
            vec![("authorization".into(), "Basic ZWxhc3RpYzpzZWNyZXQ=".into())]
        );
        let key = Auth::from_config(&AuthConfig::ApiKey {
            encoded: None,
            id: Some("id1".into()),
            api_key: Some("k".into()),
        })
        .await
        .unwrap();
        let h = key.headers("GET", "http://h/", &[], b"").await.unwrap();
        assert_eq!(h[0].1, "ApiKey aWQxOms=");
    }

    #[tokio::test]
    async fn sigv4_signs_the_body_host_and_service() {
        let signer = Sigv4Signer::fixed(
            "eu-west-1",
            "es",
            Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
        );
        let headers = signer
            .sign(
                "POST",
                "https://search-x.eu-west-1.es.amazonaws.com/_bulk",
                &[("content-type", "application/x-ndjson".into())],
                b"{}\n",
            )
            .await
            .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let authz = get("authorization");
        assert!(
            authz.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{authz}"
        );
        assert!(authz.contains("/eu-west-1/es/aws4_request"), "{authz}");
        assert!(
            authz.contains("content-type") && authz.contains("host"),
            "{authz}"
        );
        // SHA-256 of "{}\n".
        assert_eq!(
            get("x-amz-content-sha256"),
            "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"
        );
        assert!(!get("x-amz-date").is_empty());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err = http_client(
            &TlsConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                insecure_skip_verify: false,
            },
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
