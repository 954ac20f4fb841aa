//! `js-filter` (plugins/examples/js-filter/filter.js) in Rust, rule for rule, with the
//! SDK's packed world: drops health and readiness probes and debug-and-below records,
//! routes failed logins and denied requests to the named route `security`, passes the
//! rest unchanged. It exists to measure what the same logic costs per record in each
//! language (docs/benchmark.md, "Plugins in other languages").

use serde::Deserialize;
use sluice_plugin_sdk::{
    BatchView, Config, Output, PackedPlugin, PluginError, RecordView, RouteRef, ValueRef, host,
};

const LEVELS: [(&str, u8); 7] = [
    ("trace", 1),
    ("debug", 5),
    ("info", 9),
    ("warn", 13),
    ("warning", 13),
    ("error", 17),
    ("fatal", 21),
];

const SECURITY: [&str; 4] = [
    "login failed",
    "authentication failed",
    "invalid password",
    "access denied",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FilterConfig {
    drop_paths: Vec<String>,
    drop_below: String,
    security_route: String,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            drop_paths: ["/health", "/healthz", "/readyz", "/livez"]
                .map(String::from)
                .to_vec(),
            drop_below: "info".into(),
            security_route: "security".into(),
        }
    }
}

pub struct Filter {
    drop_paths: Vec<String>,
    drop_below: u8,
    security_route: String,
}

/// `needle` (lower case ASCII) in `text` as whole words, ignoring ASCII case: the JS
/// filter's `/\b(…)\b/i`.
fn has_phrase(text: &str, needle: &str) -> bool {
    let (t, n) = (text.as_bytes(), needle.as_bytes());
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    (0..t.len().saturating_sub(n.len() - 1)).any(|i| {
        t[i..i + n.len()].eq_ignore_ascii_case(n)
            && (i == 0 || !word(t[i - 1]))
            && t.get(i + n.len()).is_none_or(|&b| !word(b))
    })
}

/// The message: the body after normalize, the `message`/`msg` attribute of a raw JSON line.
fn message<'a>(record: &RecordView<'a>) -> &'a str {
    if !record.body.is_empty() {
        return record.body;
    }
    record
        .get_str("message")
        .filter(|m| !m.is_empty())
        .or_else(|| record.get_str("msg"))
        .unwrap_or("")
}

impl Filter {
    fn is_security(record: &RecordView<'_>) -> bool {
        if let Some(ValueRef::Int(401 | 403)) = record.get("http.response.status_code") {
            return true;
        }
        let m = message(record);
        SECURITY.iter().any(|p| has_phrase(m, p))
    }
}

impl PackedPlugin for Filter {
    fn init(config: &Config) -> Result<Self, PluginError> {
        let c: FilterConfig = config.parse()?;
        let drop_below = LEVELS
            .iter()
            .find(|(name, _)| *name == c.drop_below)
            .map(|&(_, n)| n)
            .ok_or_else(|| PluginError::new("filter: drop_below must be a level name"))?;
        Ok(Filter {
            drop_paths: c.drop_paths,
            drop_below,
            security_route: c.security_route,
        })
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let (mut dropped, mut security) = (0, 0);
        for record in batch.iter() {
            let probe = record
                .get_str("url.path")
                .is_some_and(|p| self.drop_paths.iter().any(|d| d == p));
            let level = record.severity_number;
            if probe || (level > 0 && level < self.drop_below) {
                dropped += 1;
                continue;
            }
            if Filter::is_security(&record) {
                let mut head = record.head();
                head.route = RouteRef::Named(&self.security_route);
                let mut w = out.record(&head);
                for a in record.attributes {
                    w.attribute(a.key, a.value);
                }
                security += 1;
            } else {
                out.keep(&record);
            }
        }
        host::counter_add("dropped", dropped);
        host::counter_add("security", security);
        Ok(())
    }
}

sluice_plugin_sdk::export_plugin!(Filter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_whole_words_in_any_case() {
        assert!(has_phrase("LOGIN FAILED for bob", "login failed"));
        assert!(has_phrase("x: access denied", "access denied"));
        assert!(!has_phrase("relogin failed", "login failed"));
        assert!(!has_phrase("login failedx", "login failed"));
        assert!(!has_phrase("login", "login failed"));
    }
}
