//! # normalize
//!
//! Turns log records of many shapes into one schema with ECS-aligned names: event time
//! in `timestamp`, the level in `severity_number`/`severity_text` and `log.level`, the
//! message in `body`, and well-known fields (`service.name`, `host.name`, `trace.id`,
//! HTTP fields, `event.duration` in ns …) as attributes. Container runtime wrappers (CRI,
//! Docker `json-file`) are taken off and text lines parsed first (JSON, klog, Ruby Logger,
//! syslog, access logs, logfmt, plain text). See `README.md` for the schema and formats.

pub mod config;
pub mod duration;
pub mod fields;
pub mod formats;
pub mod level;
pub mod mapping;
#[doc(hidden)]
pub mod testing;
pub mod time;

use config::{Config, UnknownFields};
use fields::FieldTable;
use formats::Format;
use mapping::{Input, Mapper};
use sluice_plugin_sdk::{
    Attribute, AttributeRef, BatchView, Output, PackedPlugin, PluginError, RecordView, Value, host,
};

pub struct Normalize {
    mapper: Mapper,
    parse_body: bool,
    keep_original: bool,
    unparsed_tag: String,
}

/// Counts for one batch, flushed to host counters once per call.
#[derive(Default)]
struct Counts {
    formats: [u64; Format::ALL.len()],
    timestamp_missing: u64,
    timestamp_invalid: u64,
    level_unknown: u64,
}

impl Counts {
    fn add(&mut self, format: Format) {
        self.formats[format as usize] += 1;
    }

    fn flush(&self) {
        for (format, n) in Format::ALL.iter().zip(self.formats) {
            host::counter_add(format.counter(), n);
        }
        host::counter_add("timestamp_missing", self.timestamp_missing);
        host::counter_add("timestamp_invalid", self.timestamp_invalid);
        host::counter_add("level_unknown", self.level_unknown);
    }
}

impl Normalize {
    pub fn from_config(cfg: &Config) -> Result<Self, PluginError> {
        let table = FieldTable::new(
            &cfg.alias_slots()?,
            &cfg.keep_fields,
            cfg.default_duration_unit,
        );
        Ok(Normalize {
            mapper: Mapper::new(table, cfg.unknown_fields == UnknownFields::Labels),
            parse_body: cfg.parse_body,
            keep_original: cfg.keep_original,
            unparsed_tag: serde_json::to_string(&[&cfg.unparsed_tag]).unwrap_or_default(),
        })
    }

    /// Write `record`, normalized, to `out`, counting the format it was read as.
    fn normalize(&mut self, record: &RecordView<'_>, out: &mut Output, counts: &mut Counts) {
        // A Docker json-file record is a text line in attributes; any other record with
        // attributes is mapped as it is.
        let docker = match self.parse_body
            && !record.attributes.is_empty()
            && formats::wrappers::looks_like_docker(record.attributes)
        {
            true => formats::wrappers::docker(record),
            false => None,
        };
        if docker.is_none()
            && (!record.attributes.is_empty() || record.body.is_empty() || !self.parse_body)
        {
            let input = Input {
                head: record.head(),
                attributes: record.attributes,
            };
            self.map(&input, Format::Attributes, false, out, counts);
            return counts.add(Format::Attributes);
        }
        // A text line: parsed into an owned record's attributes first.
        let (mut parsed, wrapper) = match docker {
            Some(inner) => (inner, Some(Format::DockerJson)),
            None => (record.to_record(), None),
        };
        let wrapper =
            wrapper.or_else(|| formats::wrappers::cri(&mut parsed).then_some(Format::Cri));
        if let Some(w) = wrapper {
            counts.add(w);
        }
        let original = self.keep_original.then(|| parsed.body.clone());
        let format = formats::parse_body(&mut parsed);
        counts.add(format);
        if format == Format::Unparsed {
            parsed.attributes.push(Attribute {
                key: "tags".into(),
                value: Value::Str(self.unparsed_tag.clone()),
            });
            // A wrapper's fields still get their schema names.
            if wrapper.is_none() {
                return out.push(&parsed);
            }
        }
        if let Some(original) = original {
            parsed.attributes.push(Attribute {
                key: "event.original".into(),
                value: Value::Str(original),
            });
        }
        let attributes: Vec<AttributeRef<'_>> = parsed
            .attributes
            .iter()
            .map(|a| AttributeRef {
                key: &a.key,
                value: a.value.view(),
            })
            .collect();
        let input = Input {
            head: parsed.head(),
            attributes: &attributes,
        };
        self.map(&input, format, wrapper.is_some(), out, counts);
    }

    /// `wrapped`: a container runtime's wrapper gave the record a time.
    fn map(
        &mut self,
        input: &Input<'_>,
        format: Format,
        wrapped: bool,
        out: &mut Output,
        counts: &mut Counts,
    ) {
        let outcome = self.mapper.apply(input, out);
        // Syslog, access and plain lines carry their time in the line itself.
        let structured = !wrapped
            && matches!(
                format,
                Format::Attributes | Format::JsonBody | Format::Logfmt
            );
        counts.timestamp_missing += u64::from(outcome.timestamp_missing && structured);
        counts.timestamp_invalid += u64::from(outcome.timestamp_invalid);
        counts.level_unknown += u64::from(outcome.level_unknown);
    }
}

// Normalize rewrites every record, but from borrowed parts: it reads the batch in place
// and writes each output record field by field (see `mapping`).
impl PackedPlugin for Normalize {
    fn init(config: &sluice_plugin_sdk::Config) -> Result<Self, PluginError> {
        Normalize::from_config(&config.parse::<Config>()?)
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let mut counts = Counts::default();
        for record in batch.iter() {
            if !record.is_cleaned() {
                out.keep(&record);
                continue;
            }
            self.normalize(&record, out, &mut counts);
        }
        counts.flush();
        Ok(())
    }
}

sluice_plugin_sdk::export_plugin!(Normalize);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::native::{NativePlugin, take_recorded};
    use sluice_plugin_sdk::{Record, Route};

    const KAFKA_TS: i64 = 1_795_608_000_000_000_000;

    fn run(config: &str, lines: &[&str]) -> Vec<Record> {
        let mut p = NativePlugin::<Normalize>::new(config).unwrap();
        let batch = lines
            .iter()
            .enumerate()
            .map(|(i, l)| testing::host_record(l, "t", i as i64, KAFKA_TS, KAFKA_TS))
            .collect();
        p.process(batch).unwrap()
    }

    #[test]
    fn config_is_strict() {
        assert!(NativePlugin::<Normalize>::new(r#"{"alias": {}}"#).is_err());
        assert!(NativePlugin::<Normalize>::new(r#"{"aliases": {"nope": ["x"]}}"#).is_err());
        assert!(NativePlugin::<Normalize>::new(r#"{"unknown_fields": "drop"}"#).is_err());
        assert!(NativePlugin::<Normalize>::new("").is_ok());
    }

    #[test]
    fn operator_aliases_and_keep_mode() {
        let cfg = r#"{"aliases": {"service.name": ["team"], "event.duration": ["wait_us"]},
                      "unknown_fields": "keep", "keep_fields": ["k8s.*"]}"#;
        let out = run(
            cfg,
            &[r#"{"team":"pay","app":"other","wait_us":1500,"zone":"a","k8s":{"pod":"p-1"}}"#],
        );
        let r = &out[0];
        assert_eq!(r.get_str("service.name"), Some("pay"));
        assert_eq!(r.get("event.duration"), Some(&Value::Int(1_500_000)));
        assert_eq!(r.get_str("app"), Some("other"));
        assert_eq!(r.get_str("zone"), Some("a"));
        assert_eq!(r.get_str("k8s.pod"), Some("p-1"));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let lines = [
            r#"{"ts":"2026-11-25T10:00:00.123Z","level":"error","service":"checkout","msg":"payment failed","http":{"method":"POST","path":"/pay?x=1","status":502},"duration_ms":123.4,"extra":1}"#,
            "level=warn msg=\"disk\" app=node pct=91",
            "<34>Oct 11 22:14:15 mymachine su: failed",
            "hello, nothing parseable",
        ];
        let once = run("{}", &lines);
        let mut p = NativePlugin::<Normalize>::new("{}").unwrap();
        let twice = p.process(once.clone()).unwrap();
        // Attribute order may differ (kept fields follow schema fields); content may not.
        let sorted = |rs: Vec<Record>| -> Vec<Record> {
            rs.into_iter()
                .map(|mut r| {
                    r.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                    r
                })
                .collect()
        };
        assert_eq!(sorted(once), sorted(twice));
    }

    #[test]
    fn json_text_body_and_original() {
        let mut r = Record::new(Default::default());
        r.body = r#"{"level":"warn","msg":"from a body","svc":"x"}"#.into();
        let mut p = NativePlugin::<Normalize>::new(r#"{"keep_original": true}"#).unwrap();
        take_recorded();
        let out = p.process(vec![r]).unwrap();
        assert_eq!(out[0].body, "from a body");
        assert_eq!(out[0].severity_text, "warn");
        assert_eq!(out[0].get_str("service.name"), Some("x"));
        assert!(out[0].get_str("event.original").unwrap().starts_with('{'));
        assert_eq!(take_recorded().counters.get("format.json"), Some(&1));
    }

    #[test]
    fn schema_fields_come_first_in_schema_order_then_the_rest_in_input_order() {
        let line = r#"{"zone":"a","msg":"m","status":200,"url":"https://h.example/p?q=1","service":"svc","duration_ms":5,"level":"warn","labels.team":"pay"}"#;
        let out = run(r#"{"unknown_fields": "labels"}"#, &[line]);
        let keys: Vec<&str> = out[0].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "log.level",
                "service.name",
                "url.path",
                "url.full",
                "url.query",
                "http.response.status_code",
                "event.duration",
                "latency_ms",
                // The rest in input order: the host decodes JSON keys sorted.
                "labels.team",
                "labels.zone",
            ]
        );
        assert_eq!(out[0].get_str("url.path"), Some("/p"));
        assert_eq!(out[0].get("latency_ms"), Some(&Value::Float(5.0)));
        assert_eq!((out[0].severity_number, out[0].body.as_str()), (13, "m"));
    }

    #[test]
    fn a_severity_the_record_already_has_becomes_its_level() {
        let mut r = testing::host_record(r#"{"msg":"x"}"#, "t", 0, KAFKA_TS, KAFKA_TS);
        r.severity_number = 17;
        let out = NativePlugin::<Normalize>::new("{}")
            .unwrap()
            .process(vec![r])
            .unwrap();
        assert_eq!(out[0].severity_text, "error");
        assert_eq!(out[0].attributes[0].key, "log.level");
        assert_eq!(out[0].get_str("log.level"), Some("error"));
    }

    #[test]
    fn unparsed_lines_are_tagged_and_kept() {
        let out = run(r#"{"unparsed_tag": "oops"}"#, &["no structure at all"]);
        assert_eq!(out[0].body, "no structure at all");
        assert_eq!(out[0].get_str("tags"), Some(r#"["oops"]"#));
        assert_eq!(out[0].timestamp, KAFKA_TS);
    }

    #[test]
    fn wrappers_are_unwrapped_only_when_bodies_are_parsed() {
        let docker =
            r#"{"log":"ERROR:root:boom\n","stream":"stderr","time":"2026-11-25T10:00:00Z"}"#;
        let out = run("{}", &[docker]);
        assert_eq!(
            (out[0].body.as_str(), out[0].severity_number),
            ("root:boom", 17)
        );
        assert_eq!(out[0].get_str("log.iostream"), Some("stderr"));
        let out = run(r#"{"parse_body": false}"#, &[docker]);
        assert_eq!(out[0].body, "ERROR:root:boom\n");
        assert_eq!(out[0].get_str("labels.stream"), Some("stderr"));
        take_recorded();
        let out = run(
            r#"{"keep_original": true}"#,
            &["2026-11-25T10:00:00Z stdout F hi"],
        );
        assert_eq!(out[0].get_str("event.original"), Some("hi"));
        assert_eq!(out[0].get_str("tags"), Some(r#"["sluice_unparsed"]"#));
        let counters = take_recorded().counters;
        assert_eq!(
            (counters.get("format.cri"), counters.get("unparsed")),
            (Some(&1), Some(&1))
        );
    }

    #[test]
    fn other_routes_pass_untouched() {
        let mut r = testing::host_record(r#"{"level":"error"}"#, "t", 0, 1, 1);
        r.route = Route::Metrics;
        let mut p = NativePlugin::<Normalize>::new("{}").unwrap();
        assert_eq!(p.process(vec![r.clone()]).unwrap(), vec![r]);
    }
}
