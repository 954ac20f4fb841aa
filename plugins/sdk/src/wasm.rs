//! The thin wasm layer: generated bindings and conversions to the SDK's plain types.
//! Conversions move strings and vectors; nothing is copied twice.

use crate::{Attribute, Config, Origin, Plugin, PluginError, Record, Route, Value};
use std::cell::RefCell;

pub mod bindings {
    wit_bindgen::generate!({
        world: "transform",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_transform",
        default_bindings_module: "::sluice_plugin_sdk::wasm::bindings",
    });
    pub use sluice::plugin::types::*;
}

use bindings as b;

pub fn init<P: Plugin>(slot: &RefCell<Option<P>>, config: String) -> Result<(), b::PluginError> {
    let plugin = P::init(&Config::from_json(config)).map_err(to_wit_error)?;
    *slot.borrow_mut() = Some(plugin);
    Ok(())
}

pub fn process<P: Plugin>(
    slot: &RefCell<Option<P>>,
    batch: Vec<b::LogRecord>,
) -> Result<Vec<b::LogRecord>, b::PluginError> {
    let mut slot = slot.borrow_mut();
    let plugin = slot.as_mut().ok_or_else(not_initialised)?;
    let batch: Vec<Record> = batch.into_iter().map(from_wit).collect();
    let mut out = Vec::with_capacity(batch.len());
    plugin.process(batch, &mut out).map_err(to_wit_error)?;
    Ok(out.into_iter().map(to_wit).collect())
}

pub fn tick<P: Plugin>(
    slot: &RefCell<Option<P>>,
    watermark: i64,
) -> Result<Vec<b::LogRecord>, b::PluginError> {
    let mut slot = slot.borrow_mut();
    let plugin = slot.as_mut().ok_or_else(not_initialised)?;
    let mut out = Vec::new();
    plugin.tick(watermark, &mut out).map_err(to_wit_error)?;
    Ok(out.into_iter().map(to_wit).collect())
}

fn not_initialised() -> b::PluginError {
    b::PluginError {
        message: "plugin called before init".into(),
    }
}

fn to_wit_error(e: PluginError) -> b::PluginError {
    b::PluginError { message: e.message }
}

fn from_wit(r: b::LogRecord) -> Record {
    let mut record = Record::new(Origin {
        topic: r.origin.topic,
        partition: r.origin.partition,
        offset: r.origin.offset,
    });
    record.timestamp = r.timestamp;
    record.observed_timestamp = r.observed_timestamp;
    record.severity_number = r.severity_number;
    record.severity_text = r.severity_text;
    record.body = r.body;
    record.attributes = r
        .attributes
        .into_iter()
        .map(|a| Attribute {
            key: a.key,
            value: match a.value {
                b::Value::Null => Value::Null,
                b::Value::Boolean(v) => Value::Bool(v),
                b::Value::Integer(v) => Value::Int(v),
                b::Value::Double(v) => Value::Float(v),
                b::Value::Text(v) => Value::Str(v),
                b::Value::Bytes(v) => Value::Bytes(v),
            },
        })
        .collect();
    record.route = match r.route {
        b::Route::Cleaned => Route::Cleaned,
        b::Route::Metrics => Route::Metrics,
        b::Route::Alerts => Route::Alerts,
        b::Route::Dlq(reason) => Route::Dlq(reason),
        b::Route::Named(name) => Route::Named(name),
    };
    record
}

fn to_wit(r: Record) -> b::LogRecord {
    let origin = r.origin;
    b::LogRecord {
        timestamp: r.timestamp,
        observed_timestamp: r.observed_timestamp,
        severity_number: r.severity_number,
        severity_text: r.severity_text,
        body: r.body,
        attributes: r
            .attributes
            .into_iter()
            .map(|a| b::Attribute {
                key: a.key,
                value: match a.value {
                    Value::Null => b::Value::Null,
                    Value::Bool(v) => b::Value::Boolean(v),
                    Value::Int(v) => b::Value::Integer(v),
                    Value::Float(v) => b::Value::Double(v),
                    Value::Str(v) => b::Value::Text(v),
                    Value::Bytes(v) => b::Value::Bytes(v),
                },
            })
            .collect(),
        origin: b::Origin {
            topic: origin.topic,
            partition: origin.partition,
            offset: origin.offset,
        },
        route: match r.route {
            Route::Cleaned => b::Route::Cleaned,
            Route::Metrics => b::Route::Metrics,
            Route::Alerts => b::Route::Alerts,
            Route::Dlq(reason) => b::Route::Dlq(reason),
            Route::Named(name) => b::Route::Named(name),
        },
    }
}
