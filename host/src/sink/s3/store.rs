//! S3 access for the sink: the client, the start-up checks, and writes that retry without
//! a deadline (raising `SinkUnavailable` while they fail) so an outage stalls the sink —
//! and, through the bounded channels, pauses the source — instead of losing data.

use super::S3SinkConfig;
use crate::sink::retry::{Backoff, Retry};
use crate::sink::{SinkError, SinkStats};
use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The AWS configuration of a sink: region, endpoint and timeouts from its config, the
/// rest (credentials) from the environment.
pub async fn sdk_config(config: &S3SinkConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build(),
    );
    if let Some(region) = &config.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

pub struct Store {
    client: aws_sdk_s3::Client,
    pub bucket: String,
    sink: String,
    part_bytes: usize,
    stats: Arc<SinkStats>,
}

impl Store {
    /// Connect and check, at start-up, that credentials exist and the bucket is there.
    pub async fn connect(
        sink: &str,
        config: &S3SinkConfig,
        sdk: &aws_config::SdkConfig,
        stats: Arc<SinkStats>,
    ) -> Result<Store, SinkError> {
        let fail = |message: String| SinkError::Start {
            sink: sink.to_owned(),
            message,
        };
        if sdk.region().is_none() {
            return Err(fail(format!(
                "no AWS region is configured. Set `sinks.{sink}.region` or AWS_REGION."
            )));
        }
        let Some(credentials) = sdk.credentials_provider() else {
            return Err(fail("no AWS credentials provider is available. Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role.".into()));
        };
        use aws_credential_types::provider::ProvideCredentials;
        if let Err(e) = credentials.provide_credentials().await {
            return Err(fail(format!(
                "no AWS credentials found ({e}). Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an instance role."
            )));
        }
        let s3_config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.endpoint.is_some())
            .build();
        let client = aws_sdk_s3::Client::from_conf(s3_config);
        if let Err(e) = client.head_bucket().bucket(&config.bucket).send().await {
            let not_found = e.as_service_error().is_some_and(|s| s.is_not_found());
            let message = if not_found {
                format!(
                    "`sinks.{sink}.bucket`: bucket `{}` does not exist. Create it, or fix the name (and `region`/`endpoint`).",
                    config.bucket
                )
            } else {
                format!(
                    "`sinks.{sink}.bucket`: cannot use bucket `{}`: {}. Check the credentials' permissions (s3:ListBucket, s3:PutObject), `region` and `endpoint`.",
                    config.bucket,
                    DisplayErrorContext(&e)
                )
            };
            return Err(fail(message));
        }
        Ok(Store {
            client,
            bucket: config.bucket.clone(),
            sink: sink.to_owned(),
            part_bytes: config.multipart_part_bytes,
            stats,
        })
    }

    /// Run `op` until it succeeds, with backoff and jitter, reporting the sink unavailable
    /// while it keeps failing.
    async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &self,
        what: &str,
        mut op: impl FnMut() -> F,
    ) -> T {
        let mut retry = self.retrier();
        loop {
            match op().await {
                Ok(value) => {
                    retry.succeeded();
                    return value;
                }
                Err(e) => retry.failed(1, what, &e.to_string(), None).await,
            }
        }
    }

    /// Retry bookkeeping for a caller that runs its own attempts.
    pub fn retrier(&self) -> Retry {
        Retry::new(
            &self.sink,
            self.stats.clone(),
            Backoff::from_millis(200, 30_000),
            "Check that the bucket exists, that the sink may write to it, and that S3 is reachable.",
        )
    }

    /// Write `body` at `key`, whole or not at all: a single PUT, or a multipart upload that
    /// is completed or aborted. One attempt.
    pub async fn try_put(&self, key: &str, body: &Bytes, content_type: &str) -> Result<(), String> {
        if body.len() > self.part_bytes {
            return self.multipart(key, body, content_type).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }

    /// Write a small object only if it is still as `expected` — S3's conditional writes.
    /// One attempt.
    pub async fn try_put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        expected: &Expect,
    ) -> Result<(), PutIfError> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body));
        let request = match expected {
            Expect::Version(etag) => request.if_match(etag),
            Expect::Absent => request.if_none_match("*"),
            Expect::Anything => request,
        };
        match request.send().await {
            Ok(_) => Ok(()),
            // 412: the object changed; 409: a concurrent conditional write won; 404: the
            // object an If-Match named is gone. Each means another writer got there first.
            Err(e)
                if matches!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(404 | 409 | 412)
                ) =>
            {
                Err(PutIfError::Changed)
            }
            Err(e) => Err(PutIfError::Failed(DisplayErrorContext(e).to_string())),
        }
    }

    /// The object at `key` and its ETag, or `None` if there is none. One attempt.
    pub async fn try_get(&self, key: &str) -> Result<Option<(Vec<u8>, Option<String>)>, String> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag().map(str::to_owned);
                out.body
                    .collect()
                    .await
                    .map(|b| Some((b.into_bytes().to_vec(), etag)))
                    .map_err(|e| e.to_string())
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }

    async fn multipart(&self, key: &str, body: &Bytes, content_type: &str) -> Result<(), String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(key, &upload_id, body).await;
        if result.is_err() {
            // Best effort: an upload left open is invisible, and a lifecycle rule
            // (AbortIncompleteMultipartUpload) removes its parts.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, body: &Bytes) -> Result<(), String> {
        let mut parts = Vec::new();
        for (index, start) in (0..body.len()).step_by(self.part_bytes).enumerate() {
            let end = (start + self.part_bytes).min(body.len());
            let number = index as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body.slice(start..end)))
                .send()
                .await
                .map_err(|e| DisplayErrorContext(e).to_string())?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(())
    }

    /// The object at `key`, or `None` if there is none. Retries other failures.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let what = format!("reading s3://{}/{key}", self.bucket);
        self.retry(&what, || self.try_get(key))
            .await
            .map(|(bytes, _)| bytes)
    }
}

/// What a conditional write expects to replace.
#[derive(Debug)]
pub enum Expect {
    /// No object (`If-None-Match: *`).
    Absent,
    /// The object with this ETag (`If-Match`).
    Version(String),
    /// Whatever is there (an object read without an ETag).
    Anything,
}

/// A conditional write did not happen.
#[derive(Debug)]
pub enum PutIfError {
    /// The object is not the version expected: another writer changed it.
    Changed,
    Failed(String),
}

impl std::fmt::Display for PutIfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutIfError::Changed => f.write_str("the object was changed by another writer"),
            PutIfError::Failed(e) => f.write_str(e),
        }
    }
}
