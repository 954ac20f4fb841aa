//! Done markers: a small object per processed object key, written with a conditional PUT
//! (`If-None-Match: *`) once every sink acknowledged every record of the object and before
//! its SQS message is deleted. A notification for a key already marked (S3 delivered it
//! twice, or the host died between the marker and the delete) is deleted unread.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

/// Where an object's marker is: `state bucket`, `<state prefix><bucket>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub bucket: String,
    pub key: String,
}

impl Marker {
    pub fn new(state: &(String, String), bucket: &str, key: &str) -> Marker {
        Marker {
            bucket: state.0.clone(),
            key: format!("{}{bucket}/{key}", state.1),
        }
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Whether `bucket`/`key` is a marker itself (under the state prefix): markers written
/// next to the objects announce themselves too, and must not be read as logs.
pub fn is_marker(state: &(String, String), bucket: &str, key: &str) -> bool {
    state.0 == bucket && key.starts_with(&state.1)
}

/// The ETag the marker recorded, if the marker exists.
pub async fn read(client: &aws_sdk_s3::Client, marker: &Marker) -> Result<Option<String>, String> {
    match client
        .head_object()
        .bucket(&marker.bucket)
        .key(&marker.key)
        .send()
        .await
    {
        Ok(head) => Ok(Some(
            head.metadata()
                .and_then(|m| m.get("etag"))
                .cloned()
                .unwrap_or_default(),
        )),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(DisplayErrorContext(e).to_string()),
    }
}

/// Write the marker unless it exists. `Ok(false)` if another consumer wrote it first.
pub async fn write(
    client: &aws_sdk_s3::Client,
    marker: &Marker,
    etag: &str,
    records: u64,
) -> Result<bool, String> {
    let body =
        serde_json::json!({ "etag": etag, "records": records, "at_ns": crate::time::now_ns() });
    let result = client
        .put_object()
        .bucket(&marker.bucket)
        .key(&marker.key)
        .content_type("application/json")
        .metadata("etag", etag)
        .if_none_match("*")
        .body(ByteStream::from(body.to_string().into_bytes()))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        // 412: it exists; 409: a concurrent conditional write won.
        Err(e)
            if matches!(
                e.raw_response().map(|r| r.status().as_u16()),
                Some(409 | 412)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(DisplayErrorContext(e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_keyed_by_bucket_and_key_and_recognised() {
        let state = ("logs".to_string(), "_sluice/done/".to_string());
        let marker = Marker::new(&state, "logs", "in/a.gz");
        assert_eq!(marker.url(), "s3://logs/_sluice/done/logs/in/a.gz");
        assert!(is_marker(&state, "logs", &marker.key));
        assert!(!is_marker(&state, "logs", "in/a.gz"));
        assert!(!is_marker(&state, "other", &marker.key));
    }
}
