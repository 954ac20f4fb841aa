//! Start-up: find out which engine answers, then install Sluice's index templates (and a
//! lifecycle policy where the engine has one) if they are missing or outdated. Every step
//! is idempotent, so any number of hosts may start at once.

use super::bulk::{HttpResponse, Transport, TransportError};
use super::config::EngineChoice;
use super::document::{ECS_FIELDS, FieldType, IndexNaming, SLUICE_FIELDS};
use reqwest::Method;
use serde_json::{Value as Json, json};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{what}: the engine answered {status}: {body}. {hint}")]
    Refused {
        what: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
}

impl SetupError {
    fn refused(what: impl Into<String>, response: &HttpResponse) -> SetupError {
        let hint = match response.status {
            401 => "Check `auth`: the credentials were not accepted.",
            403 => {
                "Check `auth`: the user or role needs the manage_index_templates, manage_ilm (or ISM) and write privileges."
            }
            _ => "Check `endpoints` and the engine's log.",
        };
        SetupError::Refused {
            what: what.into(),
            status: response.status,
            body: response.excerpt(),
            hint,
        }
    }
}

impl SetupError {
    /// Whether the engine refused a mapping type it does not have.
    pub fn lacks_field_type(&self, field_type: &str) -> bool {
        matches!(self, SetupError::Refused { body, .. } if body.contains(field_type))
    }
}

/// The engine family and major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Elasticsearch { major: u32 },
    OpenSearch { major: u32 },
}

impl Engine {
    pub fn name(self) -> String {
        match self {
            Engine::Elasticsearch { major } => format!("Elasticsearch {major}"),
            Engine::OpenSearch { major } => format!("OpenSearch {major}"),
        }
    }
}

fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Which engine this is. `GET /` gives it away on most clusters; some distributions refuse
/// it (405), so the node info and the `X-Elastic-Product` header are asked next.
pub async fn detect(transport: &Transport, choice: EngineChoice) -> Result<Engine, SetupError> {
    match choice {
        EngineChoice::Elasticsearch => return Ok(Engine::Elasticsearch { major: 8 }),
        EngineChoice::Opensearch => return Ok(Engine::OpenSearch { major: 2 }),
        EngineChoice::Auto => {}
    }
    let root = transport.send(Method::GET, "/", None, "").await?;
    if root.status == 200
        && let Ok(info) = serde_json::from_slice::<Json>(&root.body)
        && let Some(number) = info["version"]["number"].as_str()
    {
        let major = major(number);
        return Ok(match info["version"]["distribution"].as_str() {
            Some("opensearch") => Engine::OpenSearch { major },
            _ => Engine::Elasticsearch { major },
        });
    }
    if matches!(root.status, 401 | 403) {
        return Err(SetupError::refused("GET /", &root));
    }
    let nodes = transport
        .send(
            Method::GET,
            "/_nodes/_local?filter_path=nodes.*.version",
            None,
            "",
        )
        .await?;
    if nodes.status != 200 {
        return Err(SetupError::refused(
            "cannot tell which engine this is (GET /_nodes/_local); set `engine` explicitly",
            &nodes,
        ));
    }
    let info: Json = serde_json::from_slice(&nodes.body).unwrap_or_default();
    let version = info["nodes"]
        .as_object()
        .and_then(|n| n.values().next())
        .and_then(|n| n["version"].as_str())
        .unwrap_or("0");
    let major = major(version);
    Ok(if nodes.elastic_product || root.elastic_product {
        Engine::Elasticsearch { major }
    } else {
        Engine::OpenSearch { major }
    })
}

impl Engine {
    /// The full-text field type to try first. Logs are searched, not scored:
    /// `match_only_text` saves most of the space, but only Elasticsearch has it (and only
    /// with its mapper-extras module; minimal distributions fall back to `text`).
    pub fn full_text_type(self) -> &'static str {
        match self {
            Engine::Elasticsearch { .. } => "match_only_text",
            Engine::OpenSearch { .. } => "text",
        }
    }
}

/// The mapping of one field; `full_text` is `text` or `match_only_text`.
fn field_mapping(full_text: &str, t: FieldType) -> Json {
    match t {
        FieldType::Keyword => json!({"type": "keyword", "ignore_above": 1024}),
        FieldType::Text => json!({"type": full_text}),
        FieldType::Long => json!({"type": "long"}),
        FieldType::Double => json!({"type": "double"}),
        FieldType::Date => json!({"type": "date"}),
        FieldType::Stored => json!({"type": "keyword", "index": false, "doc_values": false}),
    }
}

/// Dotted field names as the nested `properties` a mapping needs.
pub fn mappings(full_text: &str) -> Json {
    let mut properties = serde_json::Map::new();
    for (name, t) in ECS_FIELDS.iter().chain(SLUICE_FIELDS) {
        let mut level = &mut properties;
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                level.insert(part.to_owned(), field_mapping(full_text, *t));
            } else {
                let object = level
                    .entry(part.to_owned())
                    .or_insert_with(|| json!({"properties": {}}));
                level = object["properties"]
                    .as_object_mut()
                    .expect("an object mapping has properties");
            }
        }
    }
    properties.insert("labels".into(), json!({"type": "object"}));
    json!({
        "dynamic_templates": [
            {"labels_as_keywords": {"path_match": "labels.*", "mapping": {"type": "keyword", "ignore_above": 1024}}},
            {"strings_as_keywords": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}}
        ],
        "properties": properties,
    })
}

/// One index template Sluice manages.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub body: Json,
}

/// The templates for `naming`: logs (and metrics for data streams).
pub fn templates(full_text: &str, naming: &IndexNaming, ilm_policy: Option<&str>) -> Vec<Template> {
    let (logs, metrics) = naming.patterns();
    let name_base = match naming {
        IndexNaming::DataStream { dataset, .. } => dataset.clone(),
        IndexNaming::Daily { prefix } => prefix.clone(),
    };
    let mut out = Vec::new();
    for (kind, patterns) in [("logs", logs), ("metrics", metrics)] {
        if patterns.is_empty() {
            continue;
        }
        let mut settings = json!({});
        if let Some(policy) = ilm_policy {
            settings["index.lifecycle.name"] = json!(policy);
        }
        let mut body = json!({
            "index_patterns": patterns,
            // Above the engines' built-in logs-*-* / metrics-*-* templates (100).
            "priority": 200,
            "template": {"settings": settings, "mappings": mappings(full_text)},
        });
        if naming.is_data_stream() {
            body["data_stream"] = json!({});
        }
        let fingerprint = fingerprint(&body);
        body["_meta"] = json!({"managed_by": "sluice", "fingerprint": fingerprint});
        out.push(Template {
            name: format!("sluice-{kind}-{name_base}"),
            body,
        });
    }
    out
}

fn fingerprint(body: &Json) -> String {
    let text = body.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Install `template` unless the engine already has this exact version.
pub async fn install_template(
    transport: &Transport,
    template: &Template,
) -> Result<bool, SetupError> {
    let path = format!("/_index_template/{}", template.name);
    let current = transport.send(Method::GET, &path, None, "").await?;
    match current.status {
        200 => {
            let got: Json = serde_json::from_slice(&current.body).unwrap_or_default();
            let installed = &got["index_templates"][0]["index_template"]["_meta"]["fingerprint"];
            if *installed == template.body["_meta"]["fingerprint"] {
                return Ok(false);
            }
        }
        404 => {}
        _ => {
            return Err(SetupError::refused(
                format!("reading index template {}", template.name),
                &current,
            ));
        }
    }
    let body = template.body.to_string();
    let put = transport
        .send(
            Method::PUT,
            &path,
            Some(body.into_bytes()),
            "application/json",
        )
        .await?;
    if put.status != 200 {
        return Err(SetupError::refused(
            format!("installing index template {}", template.name),
            &put,
        ));
    }
    Ok(true)
}

/// What happened to the lifecycle policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Installed now, or already there: the policy name.
    Present(String),
    /// The engine has no lifecycle endpoint (a minimal distribution, Serverless).
    Unavailable,
    /// Nothing to manage (`retention_days = 0` with daily indices).
    NotWanted,
}

/// Install the lifecycle policy (ILM on Elasticsearch, ISM on OpenSearch) if missing.
pub async fn install_lifecycle(
    transport: &Transport,
    engine: Engine,
    naming: &IndexNaming,
    retention_days: u32,
) -> Result<Lifecycle, SetupError> {
    let rollover = naming.is_data_stream();
    if !rollover && retention_days == 0 {
        return Ok(Lifecycle::NotWanted);
    }
    let name = match naming {
        IndexNaming::DataStream { dataset, .. } => format!("sluice-{dataset}"),
        IndexNaming::Daily { prefix } => format!("sluice-{prefix}"),
    };
    let (path, body) = match engine {
        Engine::Elasticsearch { .. } => (
            format!("/_ilm/policy/{name}"),
            ilm_policy(rollover, retention_days),
        ),
        Engine::OpenSearch { .. } => (
            format!("/_plugins/_ism/policies/{name}"),
            ism_policy(rollover, retention_days, &naming.patterns()),
        ),
    };
    let current = transport.send(Method::GET, &path, None, "").await?;
    if no_handler(&current) {
        return Ok(Lifecycle::Unavailable);
    }
    match current.status {
        200 => return Ok(Lifecycle::Present(name)),
        404 => {}
        _ => {
            return Err(SetupError::refused(
                format!("reading lifecycle policy {name}"),
                &current,
            ));
        }
    }
    let text = body.to_string();
    let put = transport
        .send(
            Method::PUT,
            &path,
            Some(text.into_bytes()),
            "application/json",
        )
        .await?;
    // 409: another host created it meanwhile.
    if matches!(put.status, 200 | 201 | 409) {
        Ok(Lifecycle::Present(name))
    } else {
        Err(SetupError::refused(
            format!("installing lifecycle policy {name}"),
            &put,
        ))
    }
}

/// The endpoint does not exist on this engine (as opposed to "policy not found").
fn no_handler(r: &HttpResponse) -> bool {
    let body = String::from_utf8_lossy(&r.body);
    matches!(r.status, 400 | 404 | 405 | 501) && body.contains("no handler found")
        || matches!(r.status, 405 | 501)
}

fn ilm_policy(rollover: bool, retention_days: u32) -> Json {
    let mut phases = json!({});
    phases["hot"] = if rollover {
        json!({"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}})
    } else {
        json!({"actions": {}})
    };
    if retention_days > 0 {
        phases["delete"] =
            json!({"min_age": format!("{retention_days}d"), "actions": {"delete": {}}});
    }
    json!({"policy": {"_meta": {"managed_by": "sluice"}, "phases": phases}})
}

fn ism_policy(rollover: bool, retention_days: u32, patterns: &(Vec<String>, Vec<String>)) -> Json {
    let actions = if rollover {
        json!([{"rollover": {"min_index_age": "1d", "min_primary_shard_size": "50gb"}}])
    } else {
        json!([])
    };
    let mut states = vec![json!({"name": "hot", "actions": actions, "transitions": []})];
    if retention_days > 0 {
        states[0]["transitions"] = json!([{"state_name": "delete", "conditions": {"min_index_age": format!("{retention_days}d")}}]);
        states.push(json!({"name": "delete", "actions": [{"delete": {}}], "transitions": []}));
    }
    let all: Vec<&String> = patterns.0.iter().chain(&patterns.1).collect();
    json!({"policy": {
        "description": "Sluice: roll over daily, delete after the retention period",
        "default_state": "hot",
        "states": states,
        "ism_template": [{"index_patterns": all, "priority": 100}],
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_nest_dotted_names_per_engine() {
        let es = mappings(Engine::Elasticsearch { major: 8 }.full_text_type());
        let p = &es["properties"];
        assert_eq!(p["@timestamp"]["type"], "date");
        assert_eq!(p["message"]["type"], "match_only_text");
        assert_eq!(p["service"]["properties"]["name"]["type"], "keyword");
        assert_eq!(
            p["http"]["properties"]["response"]["properties"]["status_code"]["type"],
            "long"
        );
        assert_eq!(p["latency"]["properties"]["p99_ms"]["type"], "double");
        let os = mappings(Engine::OpenSearch { major: 2 }.full_text_type());
        assert_eq!(os["properties"]["message"]["type"], "text");
    }

    #[test]
    fn templates_are_data_streams_with_a_stable_fingerprint() {
        let naming = IndexNaming::DataStream {
            dataset: "sluice".into(),
            namespace: "prod".into(),
        };
        let engine = "match_only_text";
        let t = templates(engine, &naming, Some("sluice-sluice"));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "sluice-logs-sluice");
        assert_eq!(
            t[0].body["index_patterns"],
            json!(["logs-sluice-*", "logs-sluice.*-*"])
        );
        assert_eq!(t[0].body["data_stream"], json!({}));
        assert_eq!(
            t[0].body["template"]["settings"]["index.lifecycle.name"],
            "sluice-sluice"
        );
        assert_eq!(t[1].body["index_patterns"], json!(["metrics-sluice-*"]));
        let again = templates(engine, &naming, Some("sluice-sluice"));
        assert_eq!(t[0].body["_meta"], again[0].body["_meta"]);
        let other = templates(engine, &naming, None);
        assert_ne!(t[0].body["_meta"], other[0].body["_meta"]);
        let daily = templates(
            engine,
            &IndexNaming::Daily {
                prefix: "sl".into(),
            },
            None,
        );
        assert_eq!(daily.len(), 1);
        assert!(daily[0].body.get("data_stream").is_none());
    }

    #[test]
    fn policies_roll_over_and_delete() {
        let ilm = ilm_policy(true, 7);
        assert_eq!(ilm["policy"]["phases"]["delete"]["min_age"], "7d");
        assert!(ilm["policy"]["phases"]["hot"]["actions"]["rollover"].is_object());
        let ism = ism_policy(false, 0, &(vec!["a-*".into()], vec![]));
        assert_eq!(ism["policy"]["states"].as_array().unwrap().len(), 1);
        assert_eq!(
            ism["policy"]["ism_template"][0]["index_patterns"],
            json!(["a-*"])
        );
    }
}
