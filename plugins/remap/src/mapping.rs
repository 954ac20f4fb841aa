//! A record as a VRL target and back.
//!
//! - The event (`.`) is an object of the record's **attributes under their flat keys**:
//!   `."service.name"`, `.status`. Text and bytes become VRL strings (bytes), the other
//!   types their VRL twins; a NaN double becomes null.
//! - The metadata (`%`) holds the rest of the record: `%body`, `%severity_text`,
//!   `%severity_number`, `%timestamp` and `%observed_timestamp` (VRL timestamps, null for
//!   0 = unknown), `%route` (`"cleaned"` on the way in) and `%drop` (`false`).
//!
//! On the way out, every field of the event becomes an attribute: a nested object is
//! flattened to dotted keys (`.http = {"status": 500}` gives `http.status`; an empty one
//! is the text `{}`), an array becomes its JSON text, a timestamp RFC 3339 text, as the
//! host does for JSON lines. A flat key the program wrote wins over a nested field of the
//! same name. The metadata is read back with the checks in [`Envelope::read`].

use chrono::{DateTime, SecondsFormat, Utc};
use sluice_plugin_sdk::{OriginRef, RecordHead, RecordView, RecordWriter, RouteRef, ValueRef};
use vrl::compiler::TargetValue;
use vrl::prelude::{Bytes, Collection, Field, Kind, NotNan};
use vrl::value::{KeyString, ObjectMap, Secrets, Value};

pub const BODY: &str = "body";
pub const SEVERITY_TEXT: &str = "severity_text";
pub const SEVERITY_NUMBER: &str = "severity_number";
pub const TIMESTAMP: &str = "timestamp";
pub const OBSERVED_TIMESTAMP: &str = "observed_timestamp";
pub const ROUTE: &str = "route";
pub const DROP: &str = "drop";

/// The metadata fields, in the order they are reset for each record.
const META: [&str; 7] = [
    BODY,
    SEVERITY_TEXT,
    SEVERITY_NUMBER,
    TIMESTAMP,
    OBSERVED_TIMESTAMP,
    ROUTE,
    DROP,
];

/// The types of the metadata fields, so a program can write `upcase(%body)` without
/// coercing it first.
pub fn metadata_kind() -> Kind {
    let known = [
        (BODY, Kind::bytes()),
        (SEVERITY_TEXT, Kind::bytes()),
        (SEVERITY_NUMBER, Kind::integer()),
        (TIMESTAMP, Kind::timestamp().or_null()),
        (OBSERVED_TIMESTAMP, Kind::timestamp().or_null()),
        (ROUTE, Kind::bytes()),
        (DROP, Kind::boolean()),
    ];
    let map = known
        .into_iter()
        .map(|(k, v)| (Field::from(k), v))
        .collect();
    Kind::object(Collection::from_parts(map, Kind::any()))
}

/// An attribute value as VRL sees it.
pub fn to_vrl(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Bool(b) => Value::Boolean(b),
        ValueRef::Int(i) => Value::Integer(i),
        ValueRef::Float(f) => NotNan::new(f).map_or(Value::Null, Value::Float),
        ValueRef::Str(s) => Value::Bytes(Bytes::copy_from_slice(s.as_bytes())),
        ValueRef::Bytes(b) => Value::Bytes(Bytes::copy_from_slice(b)),
    }
}

fn time_to_vrl(ns: i64) -> Value {
    if ns == 0 {
        Value::Null
    } else {
        Value::Timestamp(DateTime::from_timestamp_nanos(ns))
    }
}

/// Load `record` into `target`: the attributes as a new event, the metadata reset in
/// place (its keys are allocated once, for the first record).
pub fn load(record: &RecordView<'_>, target: &mut TargetValue) {
    let event: ObjectMap = record
        .attributes
        .iter()
        .map(|a| (KeyString::from(a.key), to_vrl(a.value)))
        .collect();
    target.value = Value::Object(event);
    let values = [
        Value::Bytes(Bytes::copy_from_slice(record.body.as_bytes())),
        Value::Bytes(Bytes::copy_from_slice(record.severity_text.as_bytes())),
        Value::Integer(i64::from(record.severity_number)),
        time_to_vrl(record.timestamp),
        time_to_vrl(record.observed_timestamp),
        Value::Bytes(Bytes::from_static(b"cleaned")),
        Value::Boolean(false),
    ];
    let meta = match &mut target.metadata {
        Value::Object(meta) => meta,
        other => {
            *other = Value::Object(ObjectMap::new());
            other.as_object_mut().expect("just set")
        }
    };
    // A program may have added fields of its own: they do not outlive their record.
    if meta.len() != META.len() {
        meta.retain(|k, _| META.contains(&k.as_str()));
    }
    for (key, value) in META.into_iter().zip(values) {
        match meta.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                meta.insert(KeyString::from(key), value);
            }
        }
    }
}

/// A fresh target, with no secrets.
pub fn new_target() -> TargetValue {
    TargetValue {
        value: Value::Object(ObjectMap::new()),
        metadata: Value::Object(ObjectMap::new()),
        secrets: Secrets::default(),
    }
}

/// Where a record goes after the program ran.
#[derive(Debug, PartialEq)]
pub enum Fate<'a> {
    Drop,
    Emit(RecordHead<'a>),
}

/// The record fields read back from the metadata, checked.
pub struct Envelope;

impl Envelope {
    /// The head of the output record, `Fate::Drop` when `%drop` is true, or why the
    /// metadata cannot make a record (the record is then dead-lettered).
    pub fn read<'a>(
        target: &'a TargetValue,
        origin: OriginRef<'a>,
        text: &'a mut String,
    ) -> Result<Fate<'a>, String> {
        let get = |key: &str| target.metadata.as_object().and_then(|m| m.get(key));
        match get(DROP) {
            None | Some(Value::Null | Value::Boolean(false)) => {}
            Some(Value::Boolean(true)) => return Ok(Fate::Drop),
            Some(v) => return Err(must_be(DROP, "a boolean", v)),
        }
        let severity_number = match get(SEVERITY_NUMBER) {
            None | Some(Value::Null) => 0,
            Some(Value::Integer(n)) if (0..=24).contains(n) => *n as u8,
            Some(v) => return Err(must_be(SEVERITY_NUMBER, "an integer from 0 to 24", v)),
        };
        let route = match get(ROUTE) {
            None | Some(Value::Null) => RouteRef::Cleaned,
            Some(v) => route(str_of(v).ok_or_else(|| must_be(ROUTE, "a string", v))?)?,
        };
        Ok(Fate::Emit(RecordHead {
            timestamp: time_of(TIMESTAMP, get(TIMESTAMP))?,
            observed_timestamp: time_of(OBSERVED_TIMESTAMP, get(OBSERVED_TIMESTAMP))?,
            severity_number,
            severity_text: text_of(SEVERITY_TEXT, get(SEVERITY_TEXT))?,
            body: body_of(get(BODY), text)?,
            origin,
            route,
        }))
    }
}

fn must_be(key: &str, what: &str, v: &Value) -> String {
    format!("`%{key}` must be {what}, not {} {v}", v.kind_str())
}

fn str_of(v: &Value) -> Option<&str> {
    match v {
        Value::Bytes(b) => std::str::from_utf8(b).ok(),
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn text_of<'a>(key: &str, v: Option<&'a Value>) -> Result<&'a str, String> {
    match v {
        None | Some(Value::Null) => Ok(""),
        Some(v) => str_of(v).ok_or_else(|| must_be(key, "a UTF-8 string", v)),
    }
}

/// The body: a string as it is; another value as its JSON text, in `scratch`.
fn body_of<'a>(v: Option<&'a Value>, scratch: &'a mut String) -> Result<&'a str, String> {
    match v {
        None | Some(Value::Null) => Ok(""),
        Some(v @ (Value::Bytes(_) | Value::String(_))) => {
            str_of(v).ok_or_else(|| must_be(BODY, "a UTF-8 string", v))
        }
        Some(v) => {
            *scratch = serde_json::to_string(v).map_err(|e| format!("`%{BODY}`: {e}"))?;
            Ok(scratch)
        }
    }
}

fn time_of(key: &str, v: Option<&Value>) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Timestamp(t)) => t.timestamp_nanos_opt().ok_or_else(|| {
            format!("`%{key}` {t} is outside the range of ns since 1970 in 64 bits")
        }),
        Some(Value::Integer(ns)) => Ok(*ns),
        Some(v) => Err(must_be(key, "a timestamp, an integer of ns or null", v)),
    }
}

/// `%route`: the built-in routes by name, any other name a named route.
fn route(name: &str) -> Result<RouteRef<'_>, String> {
    Ok(match name {
        "cleaned" => RouteRef::Cleaned,
        "metrics" => RouteRef::Metrics,
        "alerts" => RouteRef::Alerts,
        "dlq" => RouteRef::Dlq("the remap program routed the record to dlq"),
        "" => return Err(format!("`%{ROUTE}` is empty: name a route")),
        name => RouteRef::Named(name),
    })
}

/// Writes the event's fields as attributes, with buffers kept between records.
#[derive(Default)]
pub struct AttributeWriter {
    key: String,
    text: String,
}

impl AttributeWriter {
    pub fn write(&mut self, event: &Value, out: &mut RecordWriter<'_>) {
        let Some(event) = event.as_object() else {
            return; // the program replaced `.` by a non-object; nothing to write
        };
        for (key, value) in event {
            match value {
                Value::Object(inner) if !inner.is_empty() => {
                    self.key.clear();
                    self.key.push_str(key.as_str());
                    self.nested(event, inner, out);
                }
                _ => self.leaf(key.as_str(), value, out),
            }
        }
    }

    /// The fields of a nested object under `self.key`; a flat key in `top` wins.
    fn nested(&mut self, top: &ObjectMap, object: &ObjectMap, out: &mut RecordWriter<'_>) {
        let base = self.key.len();
        for (key, value) in object {
            self.key.push('.');
            self.key.push_str(key.as_str());
            match value {
                Value::Object(inner) if !inner.is_empty() => self.nested(top, inner, out),
                _ if top.contains_key(self.key.as_str()) => {}
                _ => {
                    let key = std::mem::take(&mut self.key);
                    self.leaf(&key, value, out);
                    self.key = key;
                }
            }
            self.key.truncate(base);
        }
    }

    fn leaf(&mut self, key: &str, value: &Value, out: &mut RecordWriter<'_>) {
        let v = match value {
            Value::Null => ValueRef::Null,
            Value::Boolean(b) => ValueRef::Bool(*b),
            Value::Integer(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(f.into_inner()),
            Value::Bytes(b) => std::str::from_utf8(b).map_or(ValueRef::Bytes(b), ValueRef::Str),
            Value::String(s) => ValueRef::Str(s),
            Value::Regex(r) => ValueRef::Str(r.as_str()),
            Value::Timestamp(t) => {
                self.text = rfc3339(t);
                ValueRef::Str(&self.text)
            }
            Value::Object(_) => ValueRef::Str("{}"),
            Value::Array(_) => {
                self.text = serde_json::to_string(value).unwrap_or_default();
                ValueRef::Str(&self.text)
            }
        };
        out.attribute(key, v);
    }
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
