//! Importing saved objects (the NDJSON in `kibana/`) into Kibana or OpenSearch Dashboards
//! through `POST /api/saved_objects/_import`, as a multipart upload.

use serde_json::Value as Json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KibanaError {
    #[error("cannot read {path}: {source}. Give the NDJSON export, e.g. kibana/sluice.ndjson.")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("cannot reach {url}: {message}. Check the URL and that the server is up.")]
    Unreachable { url: String, message: String },
    #[error("{url} answered {status}: {body}. {hint}")]
    Refused {
        url: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
    #[error("the import reported errors: {0}")]
    Partial(String),
}

/// Which UI receives the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dashboards {
    #[default]
    Kibana,
    OpenSearchDashboards,
}

/// Where and how to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Base URL, e.g. `http://kibana:5601`.
    pub url: String,
    /// A Kibana space; `None` is the default space.
    pub space: Option<String>,
    /// Replace objects with the same ids (what makes re-running the import idempotent).
    pub overwrite: bool,
    pub flavor: Dashboards,
    /// A full `Authorization` header value (`Basic …` or `ApiKey …`), if any.
    pub authorization: Option<String>,
}

/// What the server reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub success_count: u64,
}

/// Check that `text` is a saved-objects export: one JSON object per line, each with `type`,
/// `id` and `attributes`, and every reference pointing at an object in the file.
/// Returns the `(type, id)` of each object.
pub fn validate(path: &str, text: &str) -> Result<Vec<(String, String)>, KibanaError> {
    let invalid = |line: usize, message: String| KibanaError::Invalid {
        path: path.to_owned(),
        line,
        message,
    };
    let mut objects = Vec::new();
    let mut references = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = n + 1;
        let object: Json =
            serde_json::from_str(line).map_err(|e| invalid(line_no, format!("not JSON: {e}")))?;
        let kind = object["type"].as_str();
        let id = object["id"].as_str();
        let (Some(kind), Some(id)) = (kind, id) else {
            return Err(invalid(line_no, "needs string `type` and `id`".into()));
        };
        if !object["attributes"].is_object() {
            return Err(invalid(line_no, "needs an `attributes` object".into()));
        }
        for r in object["references"].as_array().into_iter().flatten() {
            let (Some(rk), Some(rid)) = (r["type"].as_str(), r["id"].as_str()) else {
                return Err(invalid(line_no, "a reference needs `type` and `id`".into()));
            };
            references.push((line_no, rk.to_owned(), rid.to_owned()));
        }
        objects.push((kind.to_owned(), id.to_owned()));
    }
    if objects.is_empty() {
        return Err(invalid(0, "no saved objects".into()));
    }
    for (line_no, kind, id) in references {
        if !objects.iter().any(|(k, i)| *k == kind && *i == id) {
            return Err(invalid(
                line_no,
                format!("references {kind} `{id}`, which is not in the file"),
            ));
        }
    }
    Ok(objects)
}

/// Read, check and import the NDJSON file at `path`.
pub async fn import_file(
    options: &ImportOptions,
    path: &std::path::Path,
) -> Result<ImportSummary, KibanaError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KibanaError::Read {
        path: shown.clone(),
        source,
    })?;
    validate(&shown, &text)?;
    import(options, text.as_bytes()).await
}

/// Import an NDJSON export.
pub async fn import(options: &ImportOptions, ndjson: &[u8]) -> Result<ImportSummary, KibanaError> {
    let base = options.url.trim_end_matches('/');
    let space = options
        .space
        .as_deref()
        .map_or(String::new(), |s| format!("/s/{s}"));
    let url = format!(
        "{base}{space}/api/saved_objects/_import?overwrite={}",
        options.overwrite
    );
    let boundary = format!("sluice-{:016x}", rand::random::<u64>());
    let mut body = Vec::with_capacity(ndjson.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"sluice.ndjson\"\r\nContent-Type: application/ndjson\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(ndjson);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| KibanaError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
    // Kibana refuses writes without `kbn-xsrf`; OpenSearch Dashboards wants `osd-xsrf`.
    let xsrf = match options.flavor {
        Dashboards::Kibana => "kbn-xsrf",
        Dashboards::OpenSearchDashboards => "osd-xsrf",
    };
    let mut request = client
        .post(&url)
        .header(xsrf, "true")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    if let Some(authorization) = &options.authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.map_err(|e| KibanaError::Unreachable {
        url: url.clone(),
        message: e.to_string(),
    })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status != 200 {
        let hint = match status {
            401 | 403 => "Check the credentials (--user/--password or --api-key).",
            404 => {
                "Check the URL and the space; for OpenSearch Dashboards pass --opensearch-dashboards."
            }
            _ => "See the server's log.",
        };
        return Err(KibanaError::Refused {
            url,
            status,
            body: text.chars().take(500).collect(),
            hint,
        });
    }
    let answer: Json = serde_json::from_str(&text).unwrap_or_default();
    if answer["success"] != Json::Bool(true) {
        return Err(KibanaError::Partial(answer["errors"].to_string()));
    }
    Ok(ImportSummary {
        success_count: answer["successCount"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_dangling_references() {
        let good = r#"{"type":"index-pattern","id":"a","attributes":{"title":"logs-*"}}
{"type":"search","id":"b","attributes":{"title":"x"},"references":[{"type":"index-pattern","id":"a","name":"r"}]}"#;
        assert_eq!(validate("f", good).unwrap().len(), 2);
        let bad = r#"{"type":"search","id":"b","attributes":{},"references":[{"type":"index-pattern","id":"zz","name":"r"}]}"#;
        let err = validate("f", bad).unwrap_err().to_string();
        assert!(err.contains("zz") && err.contains("line 1"), "{err}");
        assert!(validate("f", "{\"type\":\"x\"}").is_err());
    }
}
