//! A small HTTP transport (endpoint rotation, auth, gzip) and the `_bulk` protocol: request
//! bodies built from [`BulkItem`]s, responses read back into one outcome per item.

use super::auth::{Auth, AuthError};
use super::document::BulkItem;
use serde::Deserialize;
use std::collections::HashMap;
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
        let text = String::from_utf8_lossy(&self.body);
        let mut end = text.len().min(500);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].trim().to_owned()
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
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Result<HttpResponse, TransportError> {
        let base = &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()];
        let url = format!("{base}{path}");
        let mut headers: Vec<(&str, String)> = Vec::new();
        let mut payload = Vec::new();
        if let Some(body) = body {
            headers.push(("content-type", content_type.to_owned()));
            if self.gzip {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(body);
                payload = gz.finish().unwrap_or_default();
                headers.push(("content-encoding", "gzip".into()));
            } else {
                payload = body.to_vec();
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
        if body.is_some() {
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
    /// `429` or `5xx`: try again later.
    Retry(String),
    /// Refused for good (mapping conflict, …): the engine's error.
    Reject(String),
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<HashMap<String, BulkItemResult>>,
}

#[derive(Deserialize)]
struct BulkItemResult {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Read a `200` `_bulk` response for `count` items.
pub fn parse_response(body: &[u8], count: usize) -> Result<Vec<ItemOutcome>, String> {
    let response: BulkResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable _bulk response ({e})"))?;
    if !response.errors {
        return Ok(vec![ItemOutcome::Indexed; count]);
    }
    if response.items.len() != count {
        return Err(format!(
            "_bulk response has {} items for {count} sent",
            response.items.len()
        ));
    }
    Ok(response
        .items
        .into_iter()
        .map(|item| {
            let Some(result) = item.into_values().next() else {
                return ItemOutcome::Retry("empty item in _bulk response".into());
            };
            match result.status {
                200..=299 => ItemOutcome::Indexed,
                409 => ItemOutcome::AlreadyThere,
                429 | 500..=599 => {
                    ItemOutcome::Retry(format!("{}: {}", result.status, describe(&result.error)))
                }
                _ => ItemOutcome::Reject(describe(&result.error)),
            }
        })
        .collect())
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
    fn no_errors_means_every_item_indexed_and_mismatches_are_errors() {
        assert_eq!(
            parse_response(br#"{"errors":false}"#, 3).unwrap(),
            vec![ItemOutcome::Indexed; 3]
        );
        assert!(parse_response(br#"{"errors":true,"items":[]}"#, 2).is_err());
        assert!(parse_response(b"<html>", 2).is_err());
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
