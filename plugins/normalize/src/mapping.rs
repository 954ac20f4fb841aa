//! The field mapping: rewrites a record's attributes into the output schema.
//!
//! One pass over the attributes: each is looked up once and either claims its output
//! slot (the best-priority alias wins), passes unchanged, or moves to `labels.`. The
//! output record is then written straight into the plugin's packed output from borrowed
//! parts: keys are renamed and values passed on without becoming owned strings, so a
//! typical JSON record costs no allocation at all.

use crate::duration;
use crate::fields::{FieldTable, Rule, SLOT_COUNT, SLOTS, Slot};
use crate::level;
use crate::time;
use sluice_plugin_sdk::{AttributeRef, Output, RecordHead, RecordWriter, ValueRef};

/// Per-record observations the plugin turns into counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub timestamp_missing: bool,
    pub timestamp_invalid: bool,
    pub level_unknown: bool,
}

/// A record as the mapping reads it: borrowed from the input batch, or from a record
/// whose text body was just parsed into attributes.
pub struct Input<'a> {
    pub head: RecordHead<'a>,
    pub attributes: &'a [AttributeRef<'a>],
}

/// An input attribute that is not a slot winner, by its index in the input.
#[derive(Debug, Clone, Copy)]
enum Rest {
    /// Already in the output schema: passes as it is.
    Keep(usize),
    /// Maps to no output field: passes, under `labels.` when so configured.
    Unknown(usize),
}

pub struct Mapper {
    table: FieldTable,
    labels: bool,
    /// The attributes that follow the schema fields, in output order; reused across
    /// records.
    rest: Vec<Rest>,
}

/// Per output slot, the winning rule and the index of its input attribute.
type Slots = [Option<(Rule, usize)>; SLOT_COUNT];

impl Mapper {
    pub fn new(table: FieldTable, labels: bool) -> Mapper {
        Mapper {
            table,
            labels,
            rest: Vec::new(),
        }
    }

    /// A slot candidate that lost to a better alias of the same slot.
    fn loser(&mut self, input: &Input<'_>, index: usize) {
        // `latency_ms` is an output of this plugin: recomputed, not kept twice.
        if input.attributes[index].key != "latency_ms" {
            self.rest.push(Rest::Unknown(index));
        }
    }

    /// Write `input`, mapped, to `out`.
    pub fn apply(&mut self, input: &Input<'_>, out: &mut Output) -> Outcome {
        let attrs = input.attributes;
        self.rest.clear();
        let mut slots: Slots = [None; SLOT_COUNT];
        for (index, a) in attrs.iter().enumerate() {
            match self.table.lookup(a.key) {
                None => self.rest.push(Rest::Unknown(index)),
                Some(rule) if rule.slot == Slot::Keep => self.rest.push(Rest::Keep(index)),
                Some(rule) => {
                    let slot = &mut slots[rule.slot.index()];
                    match slot {
                        Some((best, _)) if best.priority <= rule.priority => {
                            self.loser(input, index)
                        }
                        _ => {
                            if let Some((_, old)) = slot.replace((rule, index)) {
                                self.loser(input, old);
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

        // The slots that set record fields come first: the head is written before any
        // attribute. Text computed for it (rare) lives in these buffers.
        let mut head = input.head;
        let mut body_text = String::new();
        let level_text: String;
        if let Some((_, index)) = slots[Slot::Timestamp.index()] {
            match timestamp(attrs[index].value, head.timestamp) {
                Some(ns) => head.timestamp = ns,
                None => {
                    outcome.timestamp_invalid = true;
                    self.rest.push(Rest::Unknown(index));
                }
            }
        }
        if let Some((_, index)) = slots[Slot::Message.index()] {
            head.body = text(attrs[index].value, &mut body_text).unwrap_or("");
        }
        let mut level_set = false;
        let mut level_attribute = None;
        if let Some((rule, index)) = slots[Slot::Level.index()] {
            let value = attrs[index].value;
            match level::from_value(value, rule.otel) {
                Some(l) => {
                    head.severity_number = l.number;
                    head.severity_text = l.text;
                    level_attribute = Some(l.text);
                    level_set = true;
                }
                None => match value {
                    // An unknown word is kept as the level text, lower-cased.
                    ValueRef::Str(s) if !s.trim().is_empty() => {
                        level_text = s.trim().to_ascii_lowercase();
                        head.severity_text = &level_text;
                        level_attribute = Some(&level_text);
                    }
                    _ => self.rest.push(Rest::Unknown(index)),
                },
            }
            outcome.level_unknown = !level_set;
        }
        // A severity the record already had (set by the host or an earlier plugin).
        let mut known_level = None;
        if !level_set && head.severity_number > 0 {
            if head.severity_text.is_empty() {
                head.severity_text = level::from_otel(head.severity_number).map_or("", |l| l.text);
            }
            known_level = Some(head.severity_text);
        }

        let mut w = out.record(&head);
        for text in [known_level, level_attribute].into_iter().flatten() {
            w.attribute("log.level", ValueRef::Str(text));
        }
        for (i, winner) in slots.iter().enumerate() {
            let Some((rule, index)) = *winner else {
                continue;
            };
            let name = SLOTS[i].1;
            let value = attrs[index].value;
            match rule.slot {
                // In the head, above.
                Slot::Timestamp | Slot::Message | Slot::Level => {}
                Slot::Url => self.url(value, index, &mut w),
                Slot::Status | Slot::Bytes => {
                    let valid = |n: &i64| rule.slot == Slot::Bytes || (100..=599).contains(n);
                    match value.as_i64().filter(valid) {
                        Some(n) => w.attribute(name, ValueRef::Int(n)),
                        None => self.rest.push(Rest::Unknown(index)),
                    }
                }
                Slot::Duration => match duration::to_ns(value, rule.unit) {
                    Some(ns) => {
                        w.attribute(name, ValueRef::Int(ns));
                        w.attribute("latency_ms", ValueRef::Float(ns as f64 / 1e6));
                    }
                    None => self.rest.push(Rest::Unknown(index)),
                },
                _ => {
                    let mut buffer = String::new();
                    match value {
                        ValueRef::Null | ValueRef::Bytes(_) | ValueRef::Str("") => {
                            self.rest.push(Rest::Unknown(index))
                        }
                        value => {
                            let mut text = text(value, &mut buffer).unwrap_or_default();
                            // GCP's `projects/<project>/traces/<id>`.
                            if let Some(path) = text.strip_prefix("projects/") {
                                text = path.rsplit_once('/').map_or(text, |(_, id)| id);
                            }
                            w.attribute(name, ValueRef::Str(text));
                        }
                    }
                }
            }
        }
        for rest in &self.rest {
            match *rest {
                Rest::Keep(index) => w.attribute(attrs[index].key, attrs[index].value),
                Rest::Unknown(index) => {
                    let AttributeRef { key, value } = attrs[index];
                    if self.labels && !key.starts_with("labels.") {
                        w.attribute_with_prefix("labels.", key, value);
                    } else {
                        w.attribute(key, value);
                    }
                }
            }
        }
        outcome
    }

    /// `url.path` (+ `url.query`, and `url.full` for absolute URLs) from a path or URL.
    fn url(&mut self, value: ValueRef<'_>, index: usize, w: &mut RecordWriter<'_>) {
        let Some(text) = value.as_str() else {
            return self.rest.push(Rest::Unknown(index));
        };
        let absolute = split_scheme(text);
        let target = match absolute {
            Some(after) => after.find('/').map_or("/", |i| &after[i..]),
            None => text,
        };
        let (path, query) = split_query(target);
        w.attribute("url.path", ValueRef::Str(path));
        if absolute.is_some() {
            w.attribute("url.full", ValueRef::Str(text));
        }
        if !query.is_empty() {
            w.attribute("url.query", ValueRef::Str(query));
        }
    }
}

/// What follows `scheme://` when `text` starts with an alphabetic scheme.
fn split_scheme(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let colon = b.iter().position(|&c| !c.is_ascii_alphabetic())?;
    (colon > 0 && b[colon..].starts_with(b"://")).then(|| &text[colon + 3..])
}

/// A URL target's path and query, without the fragment, in one pass over the bytes.
fn split_query(target: &str) -> (&str, &str) {
    let b = target.as_bytes();
    match b.iter().position(|&c| c == b'?' || c == b'#') {
        None => (target, ""),
        Some(at) if b[at] == b'#' => (&target[..at], ""),
        Some(at) => {
            let rest = &target[at + 1..];
            let end = rest.bytes().position(|c| c == b'#').unwrap_or(rest.len());
            (&target[..at], &rest[..end])
        }
    }
}

/// A value as text: text as it is, numbers and booleans formatted into `buffer`.
fn text<'a>(value: ValueRef<'a>, buffer: &'a mut String) -> Option<&'a str> {
    *buffer = match value {
        ValueRef::Str(s) => return Some(s),
        ValueRef::Int(i) => i.to_string(),
        ValueRef::Float(f) => f.to_string(),
        ValueRef::Bool(b) => b.to_string(),
        ValueRef::Null | ValueRef::Bytes(_) => return None,
    };
    Some(buffer)
}

/// A timestamp attribute: epoch numbers (unit by magnitude) or text.
pub fn timestamp(value: ValueRef<'_>, reference: i64) -> Option<i64> {
    match value {
        ValueRef::Int(i) => time::from_epoch_int(i),
        ValueRef::Float(f) => time::from_epoch_float(f),
        ValueRef::Str(s) => time::parse_text(s, reference),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(split_scheme("https://h.example/p"), Some("h.example/p"));
        assert_eq!(split_scheme("HTTP://h"), Some("h"));
        assert_eq!(split_scheme("/p?next=http://x"), None);
        assert_eq!(split_scheme("://h/p"), None);
        assert_eq!(split_scheme("h2c://h/p"), None);
        assert_eq!(split_scheme("https:/h"), None);
        assert_eq!(split_scheme("https"), None);
    }

    #[test]
    fn queries_and_fragments() {
        assert_eq!(split_query("/p"), ("/p", ""));
        assert_eq!(split_query("/p?a=1&b=2"), ("/p", "a=1&b=2"));
        assert_eq!(split_query("/p?a=1#top"), ("/p", "a=1"));
        assert_eq!(split_query("/p#top?a=1"), ("/p", ""));
        assert_eq!(split_query("/p?"), ("/p", ""));
        assert_eq!(split_query("?a"), ("", "a"));
    }
}
