//! The Amazon MSK IAM token ("aws-msk-iam-auth" over SASL/OAUTHBEARER), as AWS's signer
//! libraries make it: a SigV4 presigned URL for action `kafka-cluster:Connect` on host
//! `kafka.<region>.amazonaws.com`, service `kafka-cluster`, valid 900 seconds, with a
//! `User-Agent` parameter after the signature, base64url-encoded without padding. Its
//! parameters are laid out as the Python signer's (botocore's presigning) lays them out.

use super::SecurityError;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use std::time::{Duration, SystemTime};

/// How long a token is valid: the brokers refuse it after this.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
const SERVICE: &str = "kafka-cluster";
const ACTION: &str = "kafka-cluster:Connect";

/// Signs MSK IAM tokens for one region.
#[derive(Debug, Clone)]
pub struct MskIamSigner {
    region: String,
    user_agent: String,
}

impl MskIamSigner {
    pub fn new(region: &str) -> MskIamSigner {
        MskIamSigner {
            region: region.to_owned(),
            user_agent: format!("sluice/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    #[cfg(test)]
    fn with_user_agent(region: &str, user_agent: &str) -> MskIamSigner {
        MskIamSigner {
            region: region.to_owned(),
            user_agent: user_agent.to_owned(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The token for `credentials` signed at `now`, and when it expires.
    pub fn token(
        &self,
        credentials: &Credentials,
        now: SystemTime,
    ) -> Result<(String, SystemTime), SecurityError> {
        let url = self.presigned_url(credentials, now)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url);
        // The signing time has whole seconds; so has the expiry the brokers check.
        let signed = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| SecurityError::Sign(e.to_string()))?;
        let expiry =
            SystemTime::UNIX_EPOCH + Duration::from_secs(signed.as_secs()) + TOKEN_LIFETIME;
        Ok((token, expiry))
    }

    fn presigned_url(
        &self,
        credentials: &Credentials,
        now: SystemTime,
    ) -> Result<String, SecurityError> {
        let sign_error = |e: &dyn std::fmt::Display| SecurityError::Sign(e.to_string());
        let endpoint = format!("https://kafka.{}.amazonaws.com/", self.region);
        let action = format!("Action={}", encode(ACTION));
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_LIFETIME);
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| sign_error(&e))?
            .into();
        let url = format!("{endpoint}?{action}");
        // The empty body's hash, not UNSIGNED-PAYLOAD: the signers sign it, the brokers check it.
        let request =
            SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
                .map_err(|e| sign_error(&e))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| sign_error(&e))?
            .into_parts();
        let (_, signed) = instructions.into_parts();
        let value = |name: &str| {
            signed
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_ref())
        };
        let mut query = action;
        for name in [
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Security-Token",
            "X-Amz-Signature",
        ] {
            if let Some(v) = value(name) {
                query.push('&');
                query.push_str(name);
                query.push('=');
                query.push_str(&encode(v));
            }
        }
        query.push_str("&User-Agent=");
        query.push_str(&encode(&self.user_agent));
        Ok(format!("{endpoint}?{query}"))
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> (Credentials, SystemTime) {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            Some("FwoGZXIvYXdzEXAMPLE/session+token==".into()),
            None,
            "test",
        );
        // 2024-01-02T03:04:05Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        (credentials, now)
    }

    /// The expected token was computed once by reproducing the Python reference signer
    /// (aws-msk-iam-sasl-signer-python's `__construct_auth_token`: botocore's
    /// `SigV4QueryAuth` with service `kafka-cluster`, 900 s, then `User-Agent` appended
    /// and base64url without padding) with botocore 1.x, these credentials, this time
    /// (botocore's clock patched) and user agent `sluice-test/1.0`:
    /// `python3 dev/msk-iam-token-reference.py` (botocore 1.44.18) prints it.
    #[test]
    fn token_matches_the_reference_signer() {
        let (credentials, now) = fixed();
        let signer = MskIamSigner::with_user_agent("eu-west-1", "sluice-test/1.0");
        let (token, expiry) = signer.token(&credentials, now).unwrap();
        assert_eq!(token, EXPECTED_TOKEN);
        assert_eq!(expiry, now + TOKEN_LIFETIME);
    }

    #[test]
    fn token_is_a_presigned_connect_url() {
        let (credentials, now) = fixed();
        let (token, _) = MskIamSigner::new("us-east-1")
            .token(&credentials, now)
            .unwrap();
        assert!(!token.contains('='), "no padding");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        let url = String::from_utf8(url).unwrap();
        assert!(
            url.starts_with(
                "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240102%2Fus-east-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20240102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token="
            ),
            "{url}"
        );
        assert!(url.ends_with(&format!(
            "&User-Agent=sluice%2F{}",
            env!("CARGO_PKG_VERSION")
        )));
    }

    const EXPECTED_TOKEN: &str = concat!(
        "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIl",
        "M0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9",
        "QUtJQUlPU0ZPRE5ON0VYQU1QTEUlMkYyMDI0MDEwMiUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIl",
        "MkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MDEwMlQwMzA0MDVaJlgtQW16LUV4cGlyZXM9OTAw",
        "JlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj1Gd29HWlhJdllYZHpF",
        "WEFNUExFJTJGc2Vzc2lvbiUyQnRva2VuJTNEJTNEJlgtQW16LVNpZ25hdHVyZT0wNDRmZDUyZGZhYTMz",
        "NTRkN2U0OWIzZGNlZmNjNTI5NzAwYzBmZGZkMzUyZDI2NzcxMzQzODFlYzAwOTRkMzk1JlVzZXItQWdl",
        "bnQ9c2x1aWNlLXRlc3QlMkYxLjA",
    );
}
