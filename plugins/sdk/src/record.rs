//! The record a plugin sees: the OpenTelemetry log data model, as plain Rust types.
//!
//! These mirror `sluice:plugin/types` in `wit/plugin.wit` one to one. They exist so that
//! plugin logic compiles and runs natively (unit tests, benchmarks) as well as in wasm.
//! With the `host` feature they also carry wasmtime's component-model traits, so the host
//! moves its own records across the boundary without converting them first (field order
//! and names must therefore match the WIT exactly).

use crate::{OriginRef, RecordHead};
#[cfg(feature = "host")]
use wasmtime::component::{ComponentType, Lift, Lower};

/// A typed attribute value.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "host",
    derive(ComponentType, Lift, Lower),
    component(variant)
)]
pub enum Value {
    #[cfg_attr(feature = "host", component(name = "null"))]
    Null,
    #[cfg_attr(feature = "host", component(name = "boolean"))]
    Bool(bool),
    #[cfg_attr(feature = "host", component(name = "integer"))]
    Int(i64),
    #[cfg_attr(feature = "host", component(name = "double"))]
    Float(f64),
    #[cfg_attr(feature = "host", component(name = "text"))]
    Str(String),
    #[cfg_attr(feature = "host", component(name = "bytes"))]
    Bytes(Vec<u8>),
}

impl Value {
    /// The value borrowed, as plugins reading a packed batch in place see it.
    pub fn view(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
        }
    }

    /// The value as text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        self.view().as_str()
    }

    /// The value as an integer: integers as they are, floats truncated, numeric text parsed.
    pub fn as_i64(&self) -> Option<i64> {
        self.view().as_i64()
    }

    /// The value as a float: numbers as they are, numeric text parsed.
    pub fn as_f64(&self) -> Option<f64> {
        self.view().as_f64()
    }
}

/// A [`Value`] borrowed from the batch it was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    /// The value as text, if it is text.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer: integers as they are, floats truncated, numeric text parsed.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            ValueRef::Int(i) => Some(i),
            ValueRef::Float(f) if f.is_finite() => Some(f as i64),
            ValueRef::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as a float: numbers as they are, numeric text parsed.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            ValueRef::Int(i) => Some(i as f64),
            ValueRef::Float(f) => Some(f),
            ValueRef::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// An owned copy.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// One attribute: a dotted key and its value.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "host",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Attribute {
    pub key: String,
    pub value: Value,
}

/// Where a record came from: its Kafka topic, partition and offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "host",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Origin {
    /// Borrowed, as a packed record holds it.
    pub fn view(&self) -> OriginRef<'_> {
        OriginRef {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Where an emitted record goes. Only `Cleaned` records continue down the chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "host",
    derive(ComponentType, Lift, Lower),
    component(variant)
)]
pub enum Route {
    #[default]
    #[cfg_attr(feature = "host", component(name = "cleaned"))]
    Cleaned,
    #[cfg_attr(feature = "host", component(name = "metrics"))]
    Metrics,
    #[cfg_attr(feature = "host", component(name = "alerts"))]
    Alerts,
    /// Dead-letter, with the reason.
    #[cfg_attr(feature = "host", component(name = "dlq"))]
    Dlq(String),
    /// A route the operator names in the host config.
    #[cfg_attr(feature = "host", component(name = "named"))]
    Named(String),
}

impl Route {
    /// The route borrowed, as plugins reading a packed batch in place see it.
    pub fn view(&self) -> RouteRef<'_> {
        match self {
            Route::Cleaned => RouteRef::Cleaned,
            Route::Metrics => RouteRef::Metrics,
            Route::Alerts => RouteRef::Alerts,
            Route::Dlq(reason) => RouteRef::Dlq(reason),
            Route::Named(name) => RouteRef::Named(name),
        }
    }

    /// The route's name as used in the host config (`cleaned`, `metrics`, `alerts`, `dlq`,
    /// or the operator's own name).
    pub fn name(&self) -> &str {
        self.view().name()
    }
}

/// A [`Route`] borrowed from the batch it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRef<'a> {
    Cleaned,
    Metrics,
    Alerts,
    Dlq(&'a str),
    Named(&'a str),
}

impl<'a> RouteRef<'a> {
    /// The route's name as used in the host config.
    pub fn name(self) -> &'a str {
        match self {
            RouteRef::Cleaned => "cleaned",
            RouteRef::Metrics => "metrics",
            RouteRef::Alerts => "alerts",
            RouteRef::Dlq(_) => "dlq",
            RouteRef::Named(name) => name,
        }
    }

    /// An owned copy.
    pub fn to_route(self) -> Route {
        match self {
            RouteRef::Cleaned => Route::Cleaned,
            RouteRef::Metrics => Route::Metrics,
            RouteRef::Alerts => Route::Alerts,
            RouteRef::Dlq(reason) => Route::Dlq(reason.to_owned()),
            RouteRef::Named(name) => Route::Named(name.to_owned()),
        }
    }
}

/// OpenTelemetry severity numbers for the start of each range.
pub mod severity {
    pub const UNSPECIFIED: u8 = 0;
    pub const TRACE: u8 = 1;
    pub const DEBUG: u8 = 5;
    pub const INFO: u8 = 9;
    pub const WARN: u8 = 13;
    pub const ERROR: u8 = 17;
    pub const FATAL: u8 = 21;
}

/// A log record.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(
    feature = "host",
    derive(ComponentType, Lift, Lower),
    component(record)
)]
pub struct Record {
    /// Event time, ns since the Unix epoch; 0 when unknown.
    pub timestamp: i64,
    /// When the host first saw the record, ns since the Unix epoch.
    #[cfg_attr(feature = "host", component(name = "observed-timestamp"))]
    pub observed_timestamp: i64,
    /// OpenTelemetry severity number (see [`severity`]); 0 when unspecified.
    #[cfg_attr(feature = "host", component(name = "severity-number"))]
    pub severity_number: u8,
    #[cfg_attr(feature = "host", component(name = "severity-text"))]
    pub severity_text: String,
    pub body: String,
    pub attributes: Vec<Attribute>,
    pub(crate) origin: Origin,
    pub route: Route,
}

impl Record {
    /// A new, empty record from `origin`. Plugins that create records (a metric, an alert)
    /// pass the origin of the input that triggered them.
    pub fn new(origin: Origin) -> Self {
        Record {
            origin,
            ..Record::default()
        }
    }

    /// Where the record came from. Read-only: the host relies on it for offsets and ids.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Every field but the attributes, borrowed (to emit a rewritten copy with
    /// [`crate::Output::record`]).
    pub fn head(&self) -> RecordHead<'_> {
        RecordHead {
            timestamp: self.timestamp,
            observed_timestamp: self.observed_timestamp,
            severity_number: self.severity_number,
            severity_text: &self.severity_text,
            body: &self.body,
            origin: self.origin.view(),
            route: self.route.view(),
        }
    }

    /// The attribute `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    /// The attribute `key` as text, if present and text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Set `key` to `value`, replacing an existing value in place (keeping its position).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|a| a.key == key) {
            Some(attr) => attr.value = value,
            None => self.attributes.push(Attribute { key, value }),
        }
    }

    /// Remove `key` and return its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let index = self.attributes.iter().position(|a| a.key == key)?;
        Some(self.attributes.remove(index).value)
    }

    /// Whether the record is an error or worse (severity ERROR and above).
    pub fn is_error(&self) -> bool {
        self.severity_number >= severity::ERROR
    }

    /// Send the record to the dead-letter route with `reason`.
    pub fn dead_letter(mut self, reason: impl Into<String>) -> Self {
        self.route = Route::Dlq(reason.into());
        self
    }
}
