//! {{name}}: a Sluice transform plugin (world `transform` of wit/plugin.wit).
//!
//! Adds `{{name}}.length`, the length of each record's message, and dead-letters a record
//! that has no message. The message is the body after normalize; before it (this plugin
//! first in the chain) a JSON line's message is an attribute (`message` or `msg` here) and
//! the body is empty.

wit_bindgen::generate!({
    world: "transform",
    path: "wit",
});

use exports::sluice::plugin::state::{self, SourcePartition};
use sluice::plugin::host;
use sluice::plugin::types::{Attribute, Route, Value};

struct Plugin;

fn text<'a>(record: &'a LogRecord, key: &str) -> &'a str {
    record
        .attributes
        .iter()
        .find_map(|a| match &a.value {
            Value::Text(t) if a.key == key => Some(t.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

impl Guest for Plugin {
    fn init(config: String) -> Result<(), PluginError> {
        // Refusing unknown keys makes a misspelt config fail at start-up.
        match config.trim() {
            "{}" | "" => Ok(()),
            other => Err(PluginError {
                message: format!("{{name}}: takes no config; got {other}"),
            }),
        }
    }

    fn process(batch: Vec<LogRecord>) -> Result<Vec<LogRecord>, PluginError> {
        host::counter_add("records", batch.len() as u64); // once per batch, not per record
        Ok(batch
            .into_iter()
            .map(|mut record| {
                let message = match (record.body.as_str(), text(&record, "message")) {
                    ("", "") => text(&record, "msg"),
                    ("", message) => message,
                    (body, _) => body,
                };
                if message.is_empty() {
                    record.route = Route::Dlq("{{name}}: the record has no message".into());
                } else {
                    let length = message.chars().count() as i64;
                    record.attributes.push(Attribute {
                        key: "{{name}}.length".into(),
                        value: Value::Integer(length),
                    });
                }
                record // the same record: its origin is kept
            })
            .collect())
    }

    fn tick(_watermark: i64) -> Result<Vec<LogRecord>, PluginError> {
        Ok(Vec::new()) // nothing held back: nothing to emit as event time advances
    }
}

/// No state is kept between batches, so there is none to snapshot.
impl state::Guest for Plugin {
    fn snapshot(_source: SourcePartition) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(None)
    }

    fn restore(_source: SourcePartition, _state: Vec<u8>) -> Result<(), PluginError> {
        Ok(())
    }

    fn release(_source: SourcePartition) {}
}

export!(Plugin);
