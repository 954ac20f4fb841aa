//! A small HTTP transport (endpoint rotation, auth, gzip) and the `_bulk` protocol: request
//! bodies built from [`BulkItem`]s, responses read back into one outcome per item.

use super::auth::{Auth, AuthError};
use super::document::BulkItem;
use serde::Deserialize;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// An HTTP answer from the engine.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: bytes::Bytes,
    /// `X-Elastic-Product: Elasticsearch` was present (OpenSearch never sends it).
    pub elastic_product: bool,
}

impl HttpResponse {
    /// The engine's error for messages: its type and reason and the innermost cause, else
    /// the body as text, shortened.
    pub fn excerpt(&self) -> String {
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&self.body)
            && body["error"].is_object()
        {
            let one = |e: &serde_json::Value| {
                format!(
                    "{}: {}",
                    e["type"].as_str().unwrap_or("error"),
                    e["reason"].as_str().unwrap_or("")
                )
            };
            let top = &body["error"];
            let mut inner = top;
            while inner["caused_by"].is_object() {
                inner = &inner["caused_by"];
            }
            return if std::ptr::eq(inner, top) {
                one(top)
            } else {
                format!("{} (caused by {})", one(top), one(inner))
            };
        }
        body_excerpt(&self.body)
    }
}

/// Sends requests to the engine, rotating over its endpoints.
pub struct Transport {
    http: reqwest::Client,
    urls: Vec<String>,
    next: AtomicUsize,
    auth: Auth,
    gzip: bool,
}

impl Transport {
    pub fn new(http: reqwest::Client, urls: Vec<String>, auth: Auth, gzip: bool) -> Transport {
        Transport {
            http,
            urls,
            next: AtomicUsize::new(0),
            auth,
            gzip,
        }
    }

    /// Send one request to the next endpoint. `path` starts with `/` and may carry a query.
    /// The body is sent as it is unless compressed, not copied.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<HttpResponse, TransportError> {
        let base = &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()];
        let url = format!("{base}{path}");
        let mut headers: Vec<(&str, String)> = Vec::new();
        let mut payload = Vec::new();
        let has_body = body.is_some();
        if let Some(body) = body {
            headers.push(("content-type", content_type.to_owned()));
            if self.gzip {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(&body);
                payload = gz.finish().unwrap_or_default();
                headers.push(("content-encoding", "gzip".into()));
            } else {
                payload = body;
            }
        }
        let auth_headers = self
            .auth
            .headers(method.as_str(), &url, &headers, &payload)
            .await?;
        let mut request = self.http.request(method, &url);
        for (name, value) in &headers {
            request = request.header(*name, value.as_str());
        }
        for (name, value) in &auth_headers {
            // Sensitive values are redacted wherever the HTTP stack prints headers.
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| AuthError::InvalidHeader(name.clone()))?;
            value.set_sensitive(true);
            request = request.header(name.as_str(), value);
        }
        if has_body {
            request = request.body(payload);
        }
        let unreachable = |e: reqwest::Error| TransportError::Unreachable {
            url: base.clone(),
            message: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let elastic_product = response
            .headers()
            .get("x-elastic-product")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"elasticsearch"));
        let body = response.bytes().await.map_err(unreachable)?;
        Ok(HttpResponse {
            status,
            body,
            elastic_product,
        })
    }
}

/// reqwest's errors hide the cause (connection refused, …) in their source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `_bulk` path, asking only for what is needed to settle each item.
pub const BULK_PATH: &str = "/_bulk?filter_path=errors,items.*.status,items.*.error";

/// Concatenate the items `indices` into request bodies of at most `max_bytes` each (an item
/// larger than that goes alone).
pub fn bodies(
    items: &[BulkItem],
    indices: &[usize],
    max_bytes: usize,
) -> Vec<(Vec<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: (Vec<usize>, Vec<u8>) = (Vec::new(), Vec::new());
    for &i in indices {
        let lines = &items[i].lines;
        if !current.0.is_empty() && current.1.len() + lines.len() > max_bytes {
            out.push(std::mem::take(&mut current));
        }
        current.0.push(i);
        current.1.extend_from_slice(lines);
    }
    if !current.0.is_empty() {
        out.push(current);
    }
    out
}

/// What became of one item of a `_bulk` request.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// Written now.
    Indexed,
    /// `409` on `create`: a replay or retry of a document that is already there.
    AlreadyThere,
    /// The cluster cannot take it now (`429`, `5xx`, a write block, a missing index…): try
    /// again later.
    Retry(String),
    /// Refused for good (mapping conflict, parse error…): the engine's error.
    Reject(String),
}

/// Error types that say the cluster, not the document, is at fault, whatever the status:
/// a write or disk flood-stage block (`403`/`429`), an index being created while
/// auto-create is off (`404`), a closed index (`400`), full queues, unassigned shards.
const TRANSIENT_TYPES: &[&str] = &[
    "cluster_block_exception",
    "index_not_found_exception",
    "index_closed_exception",
    "es_rejected_execution_exception",
    "unavailable_shards_exception",
    "no_shard_available_action_exception",
    "circuit_breaking_exception",
    "process_cluster_event_timeout_exception",
];

// Both fields are required: a `200` without them (a proxy, a truncated body, another
// service on the port) says nothing about the documents.
#[derive(Deserialize)]
struct BulkResponse {
    errors: Option<bool>,
    items: Option<Vec<BulkItemEntry>>,
}

/// One item of a `_bulk` answer, `{"<action>":{…}}`, read without keeping the action's
/// name (a map per item was an allocation or three per document).
struct BulkItemEntry(Option<BulkItemResult>);

impl<'de> Deserialize<'de> for BulkItemEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = BulkItemEntry;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a _bulk item: an object with one action")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<BulkItemEntry, A::Error> {
                let mut first = None;
                while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    let result: BulkItemResult = map.next_value()?;
                    first.get_or_insert(result);
                }
                Ok(BulkItemEntry(first))
            }
        }
        deserializer.deserialize_map(Entry)
    }
}

#[derive(Deserialize)]
struct BulkItemResult {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Read a `200` `_bulk` response for `count` items, one outcome per item. A body that is
/// not a `_bulk` answer for exactly those items is an error (the caller retries the whole
/// request), quoting what came back.
pub fn parse_response(body: &[u8], count: usize) -> Result<Vec<ItemOutcome>, String> {
    let response: BulkResponse = serde_json::from_slice(body).map_err(|e| {
        format!(
            "unreadable _bulk response ({e}); it was: {}",
            body_excerpt(body)
        )
    })?;
    let (Some(_), Some(items)) = (response.errors, response.items) else {
        return Err(format!(
            "_bulk response without `errors` and `items` (is something other than the engine answering?); it was: {}",
            body_excerpt(body)
        ));
    };
    if items.len() != count {
        return Err(format!(
            "_bulk response has {} items for {count} sent; it was: {}",
            items.len(),
            body_excerpt(body)
        ));
    }
    // Every item is read even when `errors` is false: the items, not the flag, settle them.
    Ok(items
        .into_iter()
        .map(|item| match item.0 {
            Some(result) => item_outcome(result.status, &result.error),
            None => ItemOutcome::Retry("empty item in _bulk response".into()),
        })
        .collect())
}

/// Only errors in the document itself (`400` mapping, parsing and validation errors, a
/// single document too large) are permanent; everything else is the cluster's and retried.
fn item_outcome(status: u16, error: &Option<serde_json::Value>) -> ItemOutcome {
    let kind = error
        .as_ref()
        .and_then(|e| e["type"].as_str())
        .unwrap_or("");
    match status {
        200..=299 => ItemOutcome::Indexed,
        409 => ItemOutcome::AlreadyThere,
        400 | 413 if !TRANSIENT_TYPES.contains(&kind) => ItemOutcome::Reject(describe(error)),
        _ => ItemOutcome::Retry(format!("{status}: {}", describe(error))),
    }
}

/// A response body for messages: at most 500 bytes of it as text.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(500);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let excerpt = text[..end].trim();
    if excerpt.is_empty() {
        "(an empty body)".into()
    } else {
        excerpt.to_owned()
    }
}

/// `type: reason (caused by type: reason)` from an engine error object.
pub fn describe(error: &Option<serde_json::Value>) -> String {
    let Some(error) = error else {
        return "no error detail".into();
    };
    let one = |e: &serde_json::Value| {
        let kind = e["type"].as_str().unwrap_or("error");
        match e["reason"].as_str() {
            Some(reason) => format!("{kind}: {reason}"),
            None => kind.to_owned(),
        }
    };
    let mut text = one(error);
    if error["caused_by"].is_object() {
        text.push_str(&format!(" (caused by {})", one(&error["caused_by"])));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_item_status() {
        let body = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"primary not active"}}},
            {"create":{"status":400,"error":{"type":"document_parsing_exception","reason":"failed to parse field [http.response.status_code] of type [long]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"teapot\""}}}}
        ]}"#;
        let out = parse_response(body, 5).unwrap();
        assert_eq!(out[0], ItemOutcome::Indexed);
        assert_eq!(out[1], ItemOutcome::AlreadyThere);
        assert!(matches!(&out[2], ItemOutcome::Retry(e) if e.contains("429")));
        assert!(matches!(&out[3], ItemOutcome::Retry(e) if e.contains("503")));
        let ItemOutcome::Reject(reason) = &out[4] else {
            panic!("{:?}", out[4])
        };
        assert_eq!(
            reason,
            "document_parsing_exception: failed to parse field [http.response.status_code] of type [long] (caused by illegal_argument_exception: For input string: \"teapot\")"
        );
    }

    #[test]
    fn an_item_is_read_by_its_one_action_whatever_its_name() {
        let body = br#"{"errors":false,"items":[{"index":{"status":200}},{},{"create":{"status":404,"error":{"type":"index_not_found_exception"}}}]}"#;
        let out = parse_response(body, 3).unwrap();
        assert_eq!(out[0], ItemOutcome::Indexed);
        assert!(matches!(&out[1], ItemOutcome::Retry(e) if e.contains("empty item")));
        assert!(matches!(&out[2], ItemOutcome::Retry(e) if e.contains("404")));
        assert!(parse_response(br#"{"errors":false,"items":[{"create":7}]}"#, 1).is_err());
    }

    #[test]
    fn a_reply_without_errors_and_items_for_each_action_is_an_error() {
        let all_created =
            br#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}"#;
        assert_eq!(
            parse_response(all_created, 2).unwrap(),
            vec![ItemOutcome::Indexed; 2]
        );
        for (body, count) in [
            (&br#"{"took":1}"#[..], 2),
            (br#"{"errors":false}"#, 3),
            (br#"{"items":[{"create":{"status":201}}]}"#, 1),
            (br#"{"errors":true,"items":[]}"#, 2),
            (
                br#"{"errors":false,"items":[{"create":{"status":201}}]}"#,
                2,
            ),
            (b"<html>", 2),
            (b"", 1),
        ] {
            let e = parse_response(body, count).unwrap_err();
            assert!(
                e.contains(String::from_utf8_lossy(body).trim()),
                "the reply is quoted: {e}"
            );
        }
    }

    #[test]
    fn only_errors_in_the_document_are_permanent() {
        let body = br#"{"errors":true,"items":[
            {"create":{"status":403,"error":{"type":"cluster_block_exception","reason":"index [x] blocked by: [FORBIDDEN/8/index write (api)];"}}},
            {"create":{"status":429,"error":{"type":"cluster_block_exception","reason":"disk usage exceeded flood-stage watermark"}}},
            {"create":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [x]"}}},
            {"create":{"status":400,"error":{"type":"index_closed_exception","reason":"closed"}}},
            {"create":{"status":403,"error":{"type":"security_exception","reason":"action [indices:data/write/bulk[s]] is unauthorized"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
            {"create":{"status":400,"error":{"type":"illegal_argument_exception","reason":"bad value"}}},
            {"create":{"status":201}}
        ]}"#;
        let out = parse_response(body, 8).unwrap();
        for (i, o) in out[..5].iter().enumerate() {
            assert!(matches!(o, ItemOutcome::Retry(_)), "item {i}: {o:?}");
        }
        assert!(
            matches!(&out[0], ItemOutcome::Retry(e) if e.starts_with("403: cluster_block_exception"))
        );
        assert!(
            matches!(&out[5], ItemOutcome::Reject(e) if e.starts_with("mapper_parsing_exception"))
        );
        assert!(matches!(&out[6], ItemOutcome::Reject(_)));
        assert_eq!(out[7], ItemOutcome::Indexed);
    }

    #[test]
    fn bodies_respect_the_size_limit() {
        let item = |n: usize| BulkItem {
            id: n.to_string(),
            lines: vec![b'x'; n],
            source_start: 0,
        };
        let items = vec![item(40), item(40), item(40), item(200)];
        let chunks = bodies(&items, &[0, 1, 2, 3], 100);
        let shape: Vec<Vec<usize>> = chunks.iter().map(|c| c.0.clone()).collect();
        assert_eq!(shape, vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(chunks[0].1.len(), 80);
    }
}
