//! The field mapping: rewrites a record's attributes into the output schema.
//!
//! One pass over the attributes: each is looked up once and either claims its output
//! slot (the best-priority alias wins), passes unchanged, or moves to `labels.`.
//! Keys and values are rewritten in their existing buffers where possible, and the
//! attribute vectors are reused, so a typical JSON record costs few allocations.

use crate::duration;
use crate::fields::{FieldTable, Rule, SLOT_COUNT, SLOTS, Slot};
use crate::level;
use crate::time;
use sluice_plugin_sdk::{Attribute, Record, Value};

/// Per-record observations the plugin turns into counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub timestamp_missing: bool,
    pub timestamp_invalid: bool,
    pub level_unknown: bool,
}

pub struct Mapper {
    table: FieldTable,
    labels: bool,
    /// Attributes that are not slot winners, in input order; reused across records.
    rest: Vec<Attribute>,
}

type Slots = [Option<(Rule, Attribute)>; SLOT_COUNT];

impl Mapper {
    pub fn new(table: FieldTable, labels: bool) -> Mapper {
        Mapper {
            table,
            labels,
            rest: Vec::new(),
        }
    }

    /// An attribute that maps to no output field.
    fn unknown(&mut self, mut a: Attribute) {
        if self.labels && !a.key.starts_with("labels.") {
            a.key.insert_str(0, "labels.");
        }
        self.rest.push(a);
    }

    /// A slot candidate that lost to a better alias of the same slot.
    fn loser(&mut self, a: Attribute) {
        // `latency_ms` is an output of this plugin: recomputed, not kept twice.
        if a.key != "latency_ms" {
            self.unknown(a);
        }
    }

    pub fn apply(&mut self, record: &mut Record) -> Outcome {
        let mut attrs = std::mem::take(&mut record.attributes);
        let mut slots: Slots = Default::default();
        for a in attrs.drain(..) {
            match self.table.lookup(&a.key) {
                None => self.unknown(a),
                Some(rule) if rule.slot == Slot::Keep => self.rest.push(a),
                Some(rule) => {
                    let slot = &mut slots[rule.slot.index()];
                    match slot {
                        Some((best, _)) if best.priority <= rule.priority => self.loser(a),
                        _ => {
                            if let Some((_, old)) = slot.replace((rule, a)) {
                                self.loser(old);
                            }
                        }
                    }
                }
            }
        }
        let mut outcome = Outcome {
            timestamp_missing: slots[Slot::Timestamp.index()].is_none(),
            ..Outcome::default()
        };
        let mut level_set = false;
        for (i, winner) in slots.iter_mut().enumerate() {
            let Some((rule, a)) = winner.take() else {
                continue;
            };
            let name = SLOTS[i].1;
            match rule.slot {
                Slot::Timestamp => match timestamp(&a.value, record.timestamp) {
                    Some(ns) => record.timestamp = ns,
                    None => {
                        outcome.timestamp_invalid = true;
                        self.unknown(a);
                    }
                },
                Slot::Message => match into_text(a.value) {
                    Some(text) => record.body = text,
                    None => record.body.clear(),
                },
                Slot::Level => {
                    level_set = self.level(record, rule, a, &mut attrs);
                    outcome.level_unknown = !level_set;
                }
                Slot::Url => self.url(a, &mut attrs),
                Slot::Status | Slot::Bytes => {
                    let valid = |n: &i64| rule.slot == Slot::Bytes || (100..=599).contains(n);
                    match a.value.as_i64().filter(valid) {
                        Some(n) => attrs.push(rename(a, name, Value::Int(n))),
                        None => self.unknown(a),
                    }
                }
                Slot::Duration => match duration::to_ns(&a.value, rule.unit) {
                    Some(ns) => {
                        attrs.push(rename(a, name, Value::Int(ns)));
                        attrs.push(Attribute {
                            key: "latency_ms".into(),
                            value: Value::Float(ns as f64 / 1e6),
                        });
                    }
                    None => self.unknown(a),
                },
                _ => {
                    let Attribute { key, value } = a;
                    match value {
                        // Empty or null text is no value for a schema field: keep it aside.
                        Value::Null | Value::Bytes(_) => self.unknown(Attribute { key, value }),
                        Value::Str(s) if s.is_empty() => self.unknown(Attribute {
                            key,
                            value: Value::Str(s),
                        }),
                        value => {
                            let text = into_text(value).unwrap_or_default();
                            attrs.push(rename_key(key, name, Value::Str(text)));
                        }
                    }
                }
            }
        }
        // Parsers and earlier stages may have set the severity without a level field.
        if !level_set && record.severity_number > 0 {
            let text = level::from_otel(record.severity_number).map_or("", |l| l.text);
            if record.severity_text.is_empty() {
                record.severity_text = text.into();
            }
            attrs.insert(
                0,
                Attribute {
                    key: "log.level".into(),
                    value: Value::from(record.severity_text.as_str()),
                },
            );
        }
        attrs.append(&mut self.rest);
        record.attributes = attrs;
        outcome
    }

    /// Set the severity from a level field; false when the level is not recognised
    /// (the lowercased text is still kept as `log.level`).
    fn level(
        &mut self,
        record: &mut Record,
        rule: Rule,
        a: Attribute,
        out: &mut Vec<Attribute>,
    ) -> bool {
        match level::from_value(&a.value, rule.otel) {
            Some(l) => {
                record.severity_number = l.number;
                l.text.clone_into(&mut record.severity_text);
                out.push(rename(a, "log.level", Value::from(l.text)));
                true
            }
            None => match a.value {
                Value::Str(ref s) if !s.trim().is_empty() => {
                    let text = s.trim().to_ascii_lowercase();
                    record.severity_text.clone_from(&text);
                    out.push(rename(a, "log.level", Value::Str(text)));
                    false
                }
                _ => {
                    self.unknown(a);
                    false
                }
            },
        }
    }

    /// `url.path` (+ `url.query`, and `url.full` for absolute URLs) from a path or URL.
    fn url(&mut self, a: Attribute, out: &mut Vec<Attribute>) {
        let Some(text) = a.value.as_str() else {
            return self.unknown(a);
        };
        let absolute = text.split_once("://").filter(|(scheme, _)| {
            !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic())
        });
        let target = match absolute {
            Some((_, after)) => after.find('/').map_or("/", |i| &after[i..]),
            None => text,
        };
        let target = target.split('#').next().unwrap_or(target);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut extra = Vec::new();
        if absolute.is_some() {
            extra.push(Attribute {
                key: "url.full".into(),
                value: Value::from(text),
            });
        }
        if !query.is_empty() {
            extra.push(Attribute {
                key: "url.query".into(),
                value: Value::from(query),
            });
        }
        if path.len() == text.len() {
            out.push(rename_key(a.key, "url.path", a.value));
        } else {
            let path = Value::from(path);
            out.push(rename_key(a.key, "url.path", path));
        }
        out.append(&mut extra);
    }
}

fn rename(a: Attribute, name: &str, value: Value) -> Attribute {
    rename_key(a.key, name, value)
}

/// Reuse the key's buffer for the output name.
fn rename_key(mut key: String, name: &str, value: Value) -> Attribute {
    if key != name {
        key.clear();
        key.push_str(name);
    }
    Attribute { key, value }
}

fn into_text(value: Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Bytes(_) => None,
    }
}

/// A timestamp attribute: epoch numbers (unit by magnitude) or text.
pub fn timestamp(value: &Value, reference: i64) -> Option<i64> {
    match value {
        Value::Int(i) => time::from_epoch_int(*i),
        Value::Float(f) => time::from_epoch_float(*f),
        Value::Str(s) => time::parse_text(s, reference),
        _ => None,
    }
}
