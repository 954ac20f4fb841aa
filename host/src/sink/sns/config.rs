//! `[sinks.<name>] type = "sns"`: the topic, the alert policy, and where the query hints
//! in each message point.

use crate::route::RouteName;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsSinkConfig {
    /// `alerts`, and `metrics` so the policy can tell when an incident has cleared.
    pub routes: Vec<RouteName>,
    /// `arn:aws:sns:<region>:<account>:<name>`; a `.fifo` name is a FIFO topic.
    pub topic_arn: String,
    /// Defaults to the region in `topic_arn`.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom SNS endpoint (a local emulator, a VPC endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// FIFO topic; by default, whether the topic name ends in `.fifo`.
    #[serde(default)]
    pub fifo: Option<bool>,
    /// `MessageGroupId` on FIFO topics: one group keeps every message in order.
    #[serde(default = "default_message_group_id")]
    pub message_group_id: String,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Also alert on the host's own fail states (`KafkaUnavailable`, …).
    #[serde(default = "default_true")]
    pub fail_states: bool,
    /// Kibana base URL for the "look here" link, e.g. `https://kibana.example:5601`.
    #[serde(default)]
    pub kibana_url: Option<String>,
    /// Data view or index pattern the Kibana link searches.
    #[serde(default = "default_kibana_index")]
    pub kibana_index: String,
    /// Athena table of the lake for the query hint, e.g. `sluice.logs`.
    #[serde(default)]
    pub athena_table: Option<String>,
}

/// See `policy.rs` for what each knob does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// At most one firing message per (service, kind) or (fail state, subject) this often.
    pub cooldown_s: u64,
    /// Alerts whose windows start in the same bucket of this size go out as one message.
    pub group_window_s: u64,
    pub min_severity: Severity,
    /// Firing messages per minute, over all keys.
    pub max_messages_per_minute: u32,
    /// Healthy metric windows after the last alert before an incident counts as resolved.
    pub resolve_after_windows: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            cooldown_s: 900,
            group_window_s: 60,
            min_severity: Severity::Warning,
            max_messages_per_minute: 10,
            resolve_after_windows: 1,
        }
    }
}

/// Alert severity, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text.trim().to_ascii_lowercase().as_str() {
            "info" => Some(Severity::Info),
            "warning" | "warn" => Some(Severity::Warning),
            "critical" | "crit" => Some(Severity::Critical),
            _ => None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_message_group_id() -> String {
    "sluice-alerts".into()
}

fn default_kibana_index() -> String {
    "logs-*".into()
}

/// The parts of a topic ARN the sink needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicArn<'a> {
    pub region: &'a str,
    pub name: &'a str,
}

/// Split `arn:<partition>:sns:<region>:<account>:<name>`.
pub fn parse_topic_arn(arn: &str) -> Option<TopicArn<'_>> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts[..] {
        ["arn", partition, "sns", region, account, name]
            if !partition.is_empty()
                && !region.is_empty()
                && !account.is_empty()
                && !name.is_empty() =>
        {
            Some(TopicArn { region, name })
        }
        _ => None,
    }
}

impl SnsSinkConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        self.check_topic()?;
        self.check_urls()?;
        self.policy.check()
    }

    /// What it takes and where it publishes.
    fn check_topic(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_owned(), message));
        if let Some(route) =
            (self.routes.iter()).find(|r| !matches!(r, RouteName::Alerts | RouteName::Metrics))
        {
            return bad(
                "routes",
                format!(
                    "the SNS sink takes only `alerts` and `metrics`, not `{route}`; send other routes to another sink"
                ),
            );
        }
        if !self.routes.contains(&RouteName::Alerts) {
            return bad(
                "routes",
                "must include \"alerts\" (and \"metrics\", so incidents can resolve)".into(),
            );
        }
        let Some(arn) = parse_topic_arn(&self.topic_arn) else {
            return bad(
                "topic_arn",
                format!(
                    "`{}` is not an SNS topic ARN; expected arn:aws:sns:<region>:<account-id>:<topic-name>",
                    self.topic_arn
                ),
            );
        };
        let named_fifo = arn.name.ends_with(".fifo");
        match self.fifo {
            Some(true) if !named_fifo => {
                return bad(
                    "fifo",
                    "FIFO topic names end in `.fifo`; fix `topic_arn` or remove `fifo`".into(),
                );
            }
            Some(false) if named_fifo => {
                return bad(
                    "fifo",
                    "the topic name ends in `.fifo`, so it is a FIFO topic; remove `fifo = false`"
                        .into(),
                );
            }
            _ => {}
        }
        if self.is_fifo() && !valid_dedup_text(&self.message_group_id) {
            return bad(
                "message_group_id",
                "must be 1–128 letters, digits or punctuation".into(),
            );
        }
        Ok(())
    }

    /// The endpoints and the links its messages carry.
    fn check_urls(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_owned(), message));
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return bad(
                "region",
                "must not be empty; omit it to use the region of `topic_arn`".into(),
            );
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return bad(
                "endpoint",
                format!("`{endpoint}` must be an http:// or https:// URL"),
            );
        }
        if let Some(url) = &self.kibana_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad(
                "kibana_url",
                format!("`{url}` must be an http:// or https:// URL"),
            );
        }
        if self
            .athena_table
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t.contains(char::is_whitespace))
        {
            return bad(
                "athena_table",
                "must be a table name like `sluice.logs`, or omitted".into(),
            );
        }
        Ok(())
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
            .unwrap_or_else(|| self.topic_arn.ends_with(".fifo"))
    }

    /// The configured region, else the topic's.
    pub fn region(&self) -> String {
        self.region.clone().unwrap_or_else(|| {
            parse_topic_arn(&self.topic_arn).map_or_else(|| "us-east-1".into(), |a| a.region.into())
        })
    }

    pub fn takes_metrics(&self) -> bool {
        self.routes.contains(&RouteName::Metrics)
    }
}

impl PolicyConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_owned(), message));
        let p = self;
        if p.group_window_s == 0 {
            return bad("policy.group_window_s", "must be at least 1".into());
        }
        if p.max_messages_per_minute == 0 {
            return bad(
                "policy.max_messages_per_minute",
                "must be at least 1; use `policy.min_severity` to silence alerts".into(),
            );
        }
        if p.resolve_after_windows == 0 {
            return bad("policy.resolve_after_windows", "must be at least 1".into());
        }
        Ok(())
    }
}

/// SNS FIFO ids: 1–128 characters of `a-zA-Z0-9` and punctuation.
pub fn valid_dedup_text(text: &str) -> bool {
    (1..=128).contains(&text.len()) && text.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<SnsSinkConfig, String> {
        let text = format!(
            "routes = [\"alerts\", \"metrics\"]\ntopic_arn = \"arn:aws:sns:eu-west-1:123456789012:alerts\"\n{extra}"
        );
        toml::from_str::<SnsSinkConfig>(&text).map_err(|e| e.to_string())
    }

    fn check_key(extra: &str) -> String {
        parse(extra).unwrap().check().unwrap_err().0
    }

    #[test]
    fn defaults_are_sensible() {
        let c = parse("").unwrap();
        c.check().unwrap();
        assert_eq!(c.policy, PolicyConfig::default());
        assert_eq!(c.region(), "eu-west-1");
        assert!(!c.is_fifo());
        assert!(c.fail_states);
        assert!(c.takes_metrics());
    }

    #[test]
    fn fifo_follows_the_topic_name() {
        let text = "routes = [\"alerts\"]\ntopic_arn = \"arn:aws:sns:us-east-1:1:a.fifo\"";
        let c: SnsSinkConfig = toml::from_str(text).unwrap();
        c.check().unwrap();
        assert!(c.is_fifo());
        assert_eq!(check_key("fifo = true"), "fifo");
    }

    #[test]
    fn mistakes_name_their_key() {
        assert_eq!(
            check_key("policy = { group_window_s = 0 }"),
            "policy.group_window_s"
        );
        assert_eq!(
            check_key("policy = { max_messages_per_minute = 0 }"),
            "policy.max_messages_per_minute"
        );
        assert_eq!(check_key("endpoint = \"localhost:4566\""), "endpoint");
        assert_eq!(check_key("kibana_url = \"kibana\""), "kibana_url");
        let wrong_arn: SnsSinkConfig =
            toml::from_str("routes = [\"alerts\"]\ntopic_arn = \"arn:aws:sqs:us-east-1:1:q\"")
                .unwrap();
        assert_eq!(wrong_arn.check().unwrap_err().0, "topic_arn");
        let wrong_route: SnsSinkConfig =
            toml::from_str("routes = [\"cleaned\"]\ntopic_arn = \"arn:aws:sns:us-east-1:1:t\"")
                .unwrap();
        assert_eq!(wrong_route.check().unwrap_err().0, "routes");
        assert!(
            parse("policy = { cooldown = 5 }").is_err(),
            "unknown keys are rejected"
        );
        assert!(parse("policy = { min_severity = \"loud\" }").is_err());
    }

    #[test]
    fn parses_arns() {
        assert_eq!(
            parse_topic_arn("arn:aws:sns:us-east-1:123456789012:sluice-alerts"),
            Some(TopicArn {
                region: "us-east-1",
                name: "sluice-alerts"
            })
        );
        assert_eq!(parse_topic_arn("arn:aws:sns:us-east-1:123:"), None);
        assert_eq!(parse_topic_arn("sluice-alerts"), None);
    }
}
