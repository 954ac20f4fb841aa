//! The plugin's configuration (the `config` table of its entry in the host config).

use crate::duration::Unit;
use crate::fields::Slot;
use serde::Deserialize;
use sluice_plugin_sdk::PluginError;
use std::collections::BTreeMap;

/// What happens to input fields that map to no output field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// Move under `labels.<key>` (ECS custom fields), so they cannot clash with ECS names.
    Labels,
    /// Keep under their own name.
    Keep,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Extra input keys per output field, e.g. `{"service.name": ["svc_id"]}`; they
    /// rank ahead of the built-in aliases.
    pub aliases: BTreeMap<String, Vec<String>>,
    pub unknown_fields: UnknownFields,
    /// Input keys kept unchanged (not moved to `labels.`); `prefix*` keeps a whole prefix.
    pub keep_fields: Vec<String>,
    /// Parse text bodies and unwrap container runtime wrappers (CRI, Docker `json-file`).
    /// Off: text passes as is.
    pub parse_body: bool,
    /// Keep the raw text line of a parsed body in `event.original`.
    pub keep_original: bool,
    /// Unit of a bare number in a duration field without a unit suffix (`duration`).
    pub default_duration_unit: Unit,
    /// The `tags` value set on lines no parser recognised.
    pub unparsed_tag: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            aliases: BTreeMap::new(),
            unknown_fields: UnknownFields::Labels,
            keep_fields: Vec::new(),
            parse_body: true,
            keep_original: false,
            default_duration_unit: Unit::Ms,
            unparsed_tag: "sluice_unparsed".into(),
        }
    }
}

impl Config {
    /// The extra aliases with their output slots; an unknown output name is an error.
    pub fn alias_slots(&self) -> Result<Vec<(Slot, Vec<String>)>, PluginError> {
        self.aliases
            .iter()
            .map(|(name, keys)| {
                Slot::from_output_name(name)
                    .map(|slot| (slot, keys.clone()))
                    .ok_or_else(|| {
                        PluginError::new(format!(
                            "invalid config: aliases: unknown output field `{name}`"
                        ))
                    })
            })
            .collect()
    }
}
