//! The name of a route: the channel on which records leave the pipeline for the sinks
//! that take it. A plugin's record carries a [`crate::Route`] (with a dead letter's
//! reason); the host routes by this name, which also covers `raw`, a route no plugin
//! emits on: every consumed message as read.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteName {
    /// Every consumed message as read, before any plugin.
    Raw,
    /// What comes out of the last plugin (or the parsed message, without plugins).
    Cleaned,
    Metrics,
    Alerts,
    /// Dead letters: what a plugin, the host or a sink refused, with the reason.
    Dlq,
    /// A route named by the operator, emitted by a plugin.
    Named(Arc<str>),
}

impl RouteName {
    pub fn as_str(&self) -> &str {
        match self {
            RouteName::Raw => "raw",
            RouteName::Cleaned => "cleaned",
            RouteName::Metrics => "metrics",
            RouteName::Alerts => "alerts",
            RouteName::Dlq => "dlq",
            RouteName::Named(name) => name,
        }
    }
}

impl From<&str> for RouteName {
    fn from(name: &str) -> Self {
        match name {
            "raw" => RouteName::Raw,
            "cleaned" => RouteName::Cleaned,
            "metrics" => RouteName::Metrics,
            "alerts" => RouteName::Alerts,
            "dlq" => RouteName::Dlq,
            other => RouteName::Named(other.into()),
        }
    }
}

impl From<&crate::Route> for RouteName {
    fn from(route: &crate::Route) -> Self {
        match route {
            crate::Route::Cleaned => RouteName::Cleaned,
            crate::Route::Metrics => RouteName::Metrics,
            crate::Route::Alerts => RouteName::Alerts,
            crate::Route::Dlq(_) => RouteName::Dlq,
            crate::Route::Named(name) => RouteName::from(name.as_str()),
        }
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RouteName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(RouteName::from(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_back_as_itself_and_only_unknown_names_are_named() {
        for name in ["raw", "cleaned", "metrics", "alerts", "dlq", "audit"] {
            let route = RouteName::from(name);
            assert_eq!(route.as_str(), name);
            assert_eq!(matches!(route, RouteName::Named(_)), name == "audit");
        }
    }

    #[test]
    fn a_plugin_route_names_its_route_without_the_reason() {
        let dead = crate::Route::Dlq("bad input".into());
        assert_eq!(RouteName::from(&dead), RouteName::Dlq);
        let named = crate::Route::Named("audit".into());
        assert_eq!(RouteName::from(&named).as_str(), "audit");
    }
}
