//! The plugin's configuration (the `config` table of its entry in the host config).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The VRL program run on every record.
    pub source: String,
    /// The time zone of functions that read or format local times (`parse_timestamp`
    /// without a zone, `format_timestamp`): a TZ database name.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".into()
}
