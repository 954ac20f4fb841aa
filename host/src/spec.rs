//! Plugin test specs: `sluice plugin test --spec FILE`.
//!
//! A spec is a TOML file naming the plugins under test (one, or a chain, as `[[plugins]]`
//! entries of the host config, or `chain = "host.toml"`) and test cases: input lines as a
//! source would deliver them, and what must come out — outputs matched field by field,
//! counted per route. Each case runs in fresh instances of the compiled plugins, through
//! the same chain the pipeline runs (windows are closed at the end of each case's input).
//!
//! ```toml
//! [[plugins]]
//! name = "redact"
//! path = "redact.wasm"            # relative to the spec file
//! memory_limit_mb = 128
//!
//! [[test]]
//! name = "card numbers are masked"
//! input = ['{"message":"paid with 4111 1111 1111 1111"}']
//! routes = { cleaned = 1 }        # exact counts; any dead letter not expected fails
//!
//! [[test.expect]]
//! route = "cleaned"               # the default
//! count = 1                       # outputs matching every field below; the default
//! attributes.message = { contains = "[card]" }
//! attributes."user.email" = { absent = true }
//! ```

use crate::batch::Batch;
use crate::chain::{Chain, ChainOutput, Stage};
use crate::codec::{self, DecodeOptions, InvalidJson};
use crate::config::{Config, PluginConfig};
use crate::plugin::{LoadError, PluginRuntime, WasmStage};
use crate::{Origin, Record, Value};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a spec could not be run (as opposed to a case that failed).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the spec {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A spec file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    /// The plugins to run, in chain order, as in the host config.
    #[serde(default)]
    plugins: Vec<PluginConfig>,
    /// Or a host config whose chain runs.
    chain: Option<PathBuf>,
    /// The time the host "read" every input line (RFC 3339); fixed, so outputs are.
    observed: Option<String>,
    #[serde(default, rename = "test")]
    tests: Vec<CaseFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: String,
    /// Input lines, as a source delivers them (a JSON object, or any text).
    #[serde(default)]
    input: Vec<String>,
    /// Or a file of lines, relative to the spec.
    input_file: Option<PathBuf>,
    /// Exact number of outputs per route named.
    #[serde(default)]
    routes: BTreeMap<String, usize>,
    #[serde(default)]
    expect: Vec<ExpectFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    #[serde(default = "cleaned")]
    route: String,
    /// How many outputs on `route` match every matcher.
    #[serde(default = "one")]
    count: usize,
    body: Option<toml::Value>,
    severity_text: Option<toml::Value>,
    severity_number: Option<toml::Value>,
    /// Event time: ns since the epoch, or RFC 3339 text.
    timestamp: Option<toml::Value>,
    /// The origin offset: which input (0-based) the output derives from.
    offset: Option<toml::Value>,
    /// A dead letter's reason.
    reason: Option<toml::Value>,
    #[serde(default)]
    attributes: BTreeMap<String, toml::Value>,
}

fn cleaned() -> String {
    "cleaned".into()
}
fn one() -> usize {
    1
}

/// A loaded spec: where its plugins come from, and its cases.
#[derive(Debug)]
pub struct Spec {
    pub path: PathBuf,
    /// The plugins, paths resolved. Empty when the spec names none (the command line must).
    pub plugins: Vec<PluginConfig>,
    /// Largest snapshot of one partition's state, from a chain's host config.
    pub max_state_mb: u64,
    observed: i64,
    cases: Vec<Case>,
}

#[derive(Debug)]
struct Case {
    name: String,
    input: Vec<String>,
    routes: BTreeMap<String, usize>,
    expect: Vec<Expect>,
}

#[derive(Debug)]
struct Expect {
    route: String,
    count: usize,
    matchers: Vec<(Field, Matcher)>,
}

/// What a matcher looks at.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Body,
    SeverityText,
    SeverityNumber,
    Timestamp,
    Offset,
    Reason,
    Attribute(String),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Body => f.write_str("body"),
            Field::SeverityText => f.write_str("severity_text"),
            Field::SeverityNumber => f.write_str("severity_number"),
            Field::Timestamp => f.write_str("timestamp"),
            Field::Offset => f.write_str("offset"),
            Field::Reason => f.write_str("reason"),
            Field::Attribute(key) => write!(f, "attributes.\"{key}\""),
        }
    }
}

/// A field's value in an output, as the matchers compare it.
#[derive(Debug, Clone, PartialEq)]
enum Actual {
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for Actual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actual::Absent => f.write_str("(absent)"),
            Actual::Null => f.write_str("null"),
            Actual::Bool(b) => write!(f, "{b}"),
            Actual::Int(i) => write!(f, "{i}"),
            Actual::Float(x) => write!(f, "{x}"),
            Actual::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// One condition on one field.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Equals(toml::Value),
    Contains(String),
    StartsWith(String),
    Absent,
    Present,
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Equals(v) => write!(f, "= {v}"),
            Matcher::Contains(s) => write!(f, "contains {s:?}"),
            Matcher::StartsWith(s) => write!(f, "starts with {s:?}"),
            Matcher::Absent => f.write_str("absent"),
            Matcher::Present => f.write_str("present"),
        }
    }
}

impl Matcher {
    /// A plain value means equality; a table names one test.
    fn parse(value: &toml::Value) -> Result<Matcher, String> {
        let toml::Value::Table(table) = value else {
            return Ok(Matcher::Equals(value.clone()));
        };
        let mut entries = table.iter();
        let (Some((op, arg)), None) = (entries.next(), entries.next()) else {
            return Err(format!(
                "a matcher table has exactly one key (equals, contains, starts_with, absent, present); got {value}"
            ));
        };
        let text = || {
            arg.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("`{op}` takes a string; got {arg}"))
        };
        match (op.as_str(), arg) {
            ("equals", v) => Ok(Matcher::Equals(v.clone())),
            ("contains", _) => Ok(Matcher::Contains(text()?)),
            ("starts_with", _) => Ok(Matcher::StartsWith(text()?)),
            ("absent", toml::Value::Boolean(true)) => Ok(Matcher::Absent),
            ("present", toml::Value::Boolean(true)) => Ok(Matcher::Present),
            ("absent" | "present", toml::Value::Boolean(false)) => {
                Err(format!("write `{op} = true`, or the opposite matcher"))
            }
            _ => Err(format!(
                "unknown matcher `{op} = {arg}`: use equals, contains, starts_with, absent = true or present = true"
            )),
        }
    }

    fn matches(&self, actual: &Actual) -> bool {
        match (self, actual) {
            (Matcher::Absent, a) => *a == Actual::Absent,
            (Matcher::Present, a) => *a != Actual::Absent,
            (Matcher::Contains(s), Actual::Text(t)) => t.contains(s.as_str()),
            (Matcher::StartsWith(s), Actual::Text(t)) => t.starts_with(s.as_str()),
            (Matcher::Equals(v), a) => equals(v, a),
            _ => false,
        }
    }
}

fn equals(expected: &toml::Value, actual: &Actual) -> bool {
    match (expected, actual) {
        (toml::Value::String(e), Actual::Text(a)) => e == a,
        (toml::Value::Integer(e), Actual::Int(a)) => e == a,
        (toml::Value::Integer(e), Actual::Float(a)) => *e as f64 == *a,
        (toml::Value::Float(e), Actual::Float(a)) => e == a,
        (toml::Value::Float(e), Actual::Int(a)) => *e == *a as f64,
        (toml::Value::Boolean(e), Actual::Bool(a)) => e == a,
        _ => false,
    }
}

/// One output of a case: a record and its route, or a dead letter and its reason.
#[derive(Debug)]
struct Output {
    route: String,
    reason: Option<String>,
    record: Record,
}

impl Output {
    fn get(&self, field: &Field) -> Actual {
        let r = &self.record;
        let text = |s: &str| match s.is_empty() {
            true => Actual::Absent,
            false => Actual::Text(s.to_owned()),
        };
        match field {
            Field::Body => text(&r.body),
            Field::SeverityText => text(&r.severity_text),
            Field::SeverityNumber => Actual::Int(r.severity_number.into()),
            Field::Timestamp => Actual::Int(r.timestamp),
            Field::Offset => Actual::Int(r.origin().offset),
            Field::Reason => self.reason.as_deref().map_or(Actual::Absent, text),
            Field::Attribute(key) => match r.attributes.iter().find(|a| a.key == *key) {
                None => Actual::Absent,
                Some(a) => match &a.value {
                    Value::Null => Actual::Null,
                    Value::Bool(b) => Actual::Bool(*b),
                    Value::Int(i) => Actual::Int(*i),
                    Value::Float(x) => Actual::Float(*x),
                    Value::Str(s) => Actual::Text(s.clone()),
                    Value::Bytes(b) => Actual::Text(String::from_utf8_lossy(b).into_owned()),
                },
            },
        }
    }

    fn line(&self) -> String {
        let json = String::from_utf8_lossy(&codec::record_to_json(&self.record)).into_owned();
        match &self.reason {
            Some(reason) => format!("{} ({reason:?}) {json}", self.route),
            None => format!("{} {json}", self.route),
        }
    }
}

impl Spec {
    /// Read and check a spec; paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |message: String| SpecError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: SpecFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let (plugins, max_state_mb) = match (&file.chain, file.plugins.is_empty()) {
            (Some(_), false) => {
                return Err(invalid("give `chain` or `[[plugins]]`, not both".into()));
            }
            (Some(chain), true) => {
                let config = Config::load(&resolve(chain))?;
                let plugins = config.resolved_plugins();
                (plugins, config.pipeline.max_state_mb)
            }
            (None, _) => {
                let plugins = file
                    .plugins
                    .into_iter()
                    .map(|p| PluginConfig {
                        path: resolve(&p.path),
                        ..p
                    })
                    .collect();
                (plugins, 8)
            }
        };
        let observed = match &file.observed {
            Some(text) => parse_utc(text).ok_or_else(|| {
                invalid(format!(
                    "`observed = \"{text}\"` is not a UTC time like 2026-11-25T10:00:00Z"
                ))
            })?,
            // 2026-01-01T00:00:00Z: any fixed instant keeps outputs the same run to run.
            None => 1_767_225_600_000_000_000,
        };
        if file.tests.is_empty() {
            return Err(invalid("it has no `[[test]]`".into()));
        }
        let mut cases = Vec::with_capacity(file.tests.len());
        for case in file.tests {
            let name = case.name.clone();
            cases.push(
                Case::from_file(case, &resolve)
                    .map_err(|e| invalid(format!("test `{name}`: {e}")))?,
            );
        }
        Ok(Spec {
            path: path.to_owned(),
            plugins,
            max_state_mb,
            observed,
            cases,
        })
    }

    /// How many cases it has.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }
}

impl Case {
    fn from_file(case: CaseFile, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Case, String> {
        let mut input = case.input;
        if let Some(file) = &case.input_file {
            let path = resolve(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            input.extend(text.lines().map(str::to_owned));
        }
        let mut expect = Vec::with_capacity(case.expect.len());
        for e in case.expect {
            let mut matchers = Vec::new();
            let fixed = [
                (Field::Body, e.body),
                (Field::SeverityText, e.severity_text),
                (Field::SeverityNumber, e.severity_number),
                (Field::Timestamp, e.timestamp.map(timestamp_ns).transpose()?),
                (Field::Offset, e.offset),
                (Field::Reason, e.reason),
            ];
            for (field, value) in fixed {
                if let Some(value) = value {
                    matchers.push((
                        field.clone(),
                        Matcher::parse(&value).map_err(|m| format!("{field}: {m}"))?,
                    ));
                }
            }
            for (key, value) in e.attributes {
                let field = Field::Attribute(key);
                let matcher = Matcher::parse(&value).map_err(|m| format!("{field}: {m}"))?;
                matchers.push((field, matcher));
            }
            expect.push(Expect {
                route: e.route,
                count: e.count,
                matchers,
            });
        }
        Ok(Case {
            name: case.name,
            input,
            routes: case.routes,
            expect,
        })
    }
}

/// RFC 3339 text in an expected timestamp becomes ns, as records carry it.
fn timestamp_ns(value: toml::Value) -> Result<toml::Value, String> {
    let text = match &value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => return Ok(value),
    };
    parse_utc(&text).map(toml::Value::Integer).ok_or_else(|| {
        format!("timestamp: `{text}` is not a UTC time like 2026-11-25T10:00:00.123Z")
    })
}

/// `2026-11-25T10:00:00Z`, with any fraction of a second, as ns since the epoch.
fn parse_utc(text: &str) -> Option<i64> {
    let (seconds, fraction) = match text.strip_suffix('Z')?.split_once('.') {
        Some((s, f)) => (format!("{s}Z"), f),
        None => (text.to_owned(), ""),
    };
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = crate::generator::parse_start(&seconds).ok()?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse::<i64>().ok()?
    };
    Some(whole + nanos)
}

/// What running a spec found: each case's name, and for a failed one a readable account
/// of what differed.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<(String, Option<String>)>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|(_, diff)| diff.is_some()).count()
    }
}

/// Compile `plugins` once; each case then runs in fresh instances.
pub fn load(
    plugins: &[PluginConfig],
    max_state_mb: u64,
) -> Result<(Arc<PluginRuntime>, Vec<WasmStage>), LoadError> {
    let max_memory = plugins
        .iter()
        .map(|p| p.memory_limit_mb)
        .max()
        .unwrap_or(64);
    // Each stage's instance, its replacement after a failure, and `load`'s own.
    let slots = plugins.len() as u32 * 3 + 2;
    let runtime = Arc::new(PluginRuntime::new(slots, max_memory)?.with_max_state_mb(max_state_mb));
    let mut stages = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        let loaded = runtime.load(plugin, &plugin.path)?;
        stages.push(WasmStage::new(Arc::new(loaded)));
    }
    Ok((runtime, stages))
}

impl Spec {
    /// Run every case through fresh instances of `stages`.
    pub fn run(&self, stages: &[WasmStage]) -> Report {
        let mut report = Report::default();
        for case in &self.cases {
            let fresh = stages
                .iter()
                .map(|s| Box::new(s.fresh()) as Box<dyn Stage>)
                .collect();
            let outputs = run_case(
                Chain::new(fresh, Duration::from_secs(3600)),
                case,
                self.observed,
            );
            report
                .cases
                .push((case.name.clone(), check(case, &outputs)));
        }
        report
    }
}

fn run_case(mut chain: Chain, case: &Case, observed: i64) -> Vec<Output> {
    let options = DecodeOptions {
        max_message_bytes: 1 << 20,
        invalid_json: InvalidJson::Dlq,
    };
    let mut outputs = Vec::new();
    let mut batch = Vec::with_capacity(case.input.len());
    for (i, line) in case.input.iter().enumerate() {
        let origin = Origin {
            topic: "spec".into(),
            partition: 0,
            offset: i as i64,
        };
        match codec::decode(
            line.as_bytes(),
            origin.clone(),
            observed,
            observed,
            &options,
        ) {
            Ok(record) => batch.push(record),
            Err(reason) => outputs.push(Output {
                route: "dlq".into(),
                reason: Some(format!("cannot decode: {reason}")),
                record: Record::new(origin),
            }),
        }
    }
    let mut out = ChainOutput::default();
    chain.process(Batch::Records(batch), &mut out);
    chain.tick(true, &mut out);
    for record in out.records() {
        outputs.push(Output {
            route: record.route.name().to_owned(),
            reason: None,
            record,
        });
    }
    for (record, reason) in out.dead {
        outputs.push(Output {
            route: "dlq".into(),
            reason: Some(reason),
            record,
        });
    }
    outputs
}

/// `None` when the case holds; else what differed, for a person to read.
fn check(case: &Case, outputs: &[Output]) -> Option<String> {
    let mut diff = String::new();
    let count = |route: &str| outputs.iter().filter(|o| o.route == route).count();
    for (route, want) in &case.routes {
        let got = count(route);
        if got != *want {
            let _ = writeln!(
                diff,
                "  route `{route}`: expected {want} outputs, got {got}"
            );
        }
    }
    // A dead letter nobody expected is a failure even when the spec did not count them.
    let dlq_expected =
        case.routes.contains_key("dlq") || case.expect.iter().any(|e| e.route == "dlq");
    if !dlq_expected && count("dlq") > 0 {
        let _ = writeln!(diff, "  {} unexpected dead letters:", count("dlq"));
        for o in outputs.iter().filter(|o| o.route == "dlq") {
            let _ = writeln!(diff, "    {}", o.reason.as_deref().unwrap_or(""));
        }
    }
    for expect in &case.expect {
        check_expect(expect, outputs, &mut diff);
    }
    if diff.is_empty() {
        return None;
    }
    let _ = writeln!(diff, "  outputs ({}):", outputs.len());
    const SHOWN: usize = 20;
    for (i, o) in outputs.iter().take(SHOWN).enumerate() {
        let _ = writeln!(diff, "    #{i} {}", o.line());
    }
    if outputs.len() > SHOWN {
        let _ = writeln!(diff, "    … {} more", outputs.len() - SHOWN);
    }
    Some(diff)
}

fn check_expect(expect: &Expect, outputs: &[Output], diff: &mut String) {
    let on_route: Vec<(usize, &Output)> = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.route == expect.route)
        .collect();
    let misses = |o: &Output| {
        expect
            .matchers
            .iter()
            .filter(|(field, m)| !m.matches(&o.get(field)))
            .count()
    };
    let matching = on_route.iter().filter(|(_, o)| misses(o) == 0).count();
    if matching == expect.count {
        return;
    }
    let _ = writeln!(
        diff,
        "  expected {} output(s) on `{}` with:",
        expect.count, expect.route
    );
    for (field, m) in &expect.matchers {
        let _ = writeln!(diff, "      {field} {m}");
    }
    let _ = writeln!(diff, "    found {matching}");
    // The nearest miss says most about what went wrong.
    let nearest = on_route
        .iter()
        .filter(|(_, o)| misses(o) > 0)
        .min_by_key(|(_, o)| misses(o));
    if let Some((i, o)) = nearest {
        let _ = writeln!(diff, "    nearest, output #{i}:");
        for (field, m) in &expect.matchers {
            let actual = o.get(field);
            if !m.matches(&actual) {
                let _ = writeln!(diff, "      - {field} {m}");
                let _ = writeln!(diff, "      + {field} is {actual}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(text: &str) -> Result<Matcher, String> {
        let table: toml::Table = toml::from_str(&format!("m = {text}")).unwrap();
        Matcher::parse(&table["m"])
    }

    #[test]
    fn matchers_compare_values_of_their_kind() {
        assert!(matcher("502").unwrap().matches(&Actual::Int(502)));
        assert!(matcher("502").unwrap().matches(&Actual::Float(502.0)));
        assert!(!matcher("502").unwrap().matches(&Actual::Text("502".into())));
        assert!(
            matcher("{ contains = \"card\" }")
                .unwrap()
                .matches(&Actual::Text("[card]".into()))
        );
        assert!(
            !matcher("{ starts_with = \"x\" }")
                .unwrap()
                .matches(&Actual::Absent)
        );
        assert!(
            matcher("{ absent = true }")
                .unwrap()
                .matches(&Actual::Absent)
        );
        assert!(
            !matcher("{ present = true }")
                .unwrap()
                .matches(&Actual::Absent)
        );
    }

    #[test]
    fn a_matcher_table_names_one_known_test() {
        assert!(
            matcher("{ contians = \"a\" }")
                .unwrap_err()
                .contains("contians")
        );
        assert!(matcher("{ contains = \"a\", absent = true }").is_err());
        assert!(matcher("{ absent = false }").is_err());
        assert!(matcher("{ contains = 3 }").is_err());
    }

    #[test]
    fn utc_times_take_any_fraction() {
        assert_eq!(parse_utc("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_utc("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_utc("1970-01-01T00:00:00.000000001Z"), Some(1));
        assert_eq!(parse_utc("1970-01-01T00:00:00.1234567890Z"), None);
        assert_eq!(parse_utc("1970-01-01 00:00:00"), None);
    }
}
