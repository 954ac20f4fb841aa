//! # remap
//!
//! Runs a VRL program (Vector's remap language) from the plugin's config on every record:
//! rename, drop, parse, route and filter without writing a plugin. The program is
//! compiled once, at `init`; a compile error fails the plugin's load with VRL's own
//! diagnostic. Per record: the record is loaded into a reused target ([`mapping`]), the
//! program runs on a reused runtime, and the result is written back.
//!
//! - `abort`, or `%drop = true`: the record is dropped.
//! - `%route = "errors"`: the record leaves the chain on the named route `errors`
//!   (`"metrics"`, `"alerts"`, `"dlq"` and `"cleaned"` are the built-in routes).
//! - A runtime error (a failed `!` call, `assert!`, an unusable `%` field): the input
//!   record, unchanged, is dead-lettered with VRL's message as the reason.

pub mod config;
pub mod mapping;

use mapping::{AttributeWriter, Envelope, Fate};
use sluice_plugin_sdk::{BatchView, Output, PackedPlugin, PluginError, RecordView, RouteRef, host};
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::state::ExternalEnv;
use vrl::compiler::{CompileConfig, ExpressionError, Program, TargetValue, TimeZone};
use vrl::diagnostic::Formatter;
use vrl::value::Kind;

/// Why the plugin cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    #[error("invalid config: `source`: the VRL program does not compile:{0}")]
    Compile(String),
    #[error(
        "invalid config: `timezone`: unknown time zone `{0}`: use a TZ database name such as `UTC` or `Europe/Berlin`"
    )]
    TimeZone(String),
}

impl From<RemapError> for PluginError {
    fn from(e: RemapError) -> Self {
        PluginError::new(e.to_string())
    }
}

/// Functions VRL's stdlib has but a plugin cannot run: they need the network, the host's
/// name, files or tracing, which the sandbox does not give, or a C library not built for
/// wasm (grok). In wasm VRL compiles them to an `abort`, which would drop every record
/// silently; left out, a program calling one fails to load, naming it.
pub const LEFT_OUT: [&str; 10] = [
    "dns_lookup",
    "reverse_dns",
    "http_request",
    "get_hostname",
    "log",
    "parse_grok",
    "parse_groks",
    "validate_json_schema",
    "parse_proto",
    "encode_proto",
];

/// VRL's functions in this plugin: the stdlib of this build less [`LEFT_OUT`], the same
/// natively and in wasm.
pub fn functions() -> Vec<Box<dyn vrl::compiler::Function>> {
    let mut functions = vrl::stdlib::all();
    functions.retain(|f| !LEFT_OUT.contains(&f.identifier()));
    functions
}

/// Compile `source` with [`functions`], the metadata typed as [`mapping`] fills it.
pub fn compile(source: &str) -> Result<Program, RemapError> {
    let functions = functions();
    let external = ExternalEnv::new_with_kind(Kind::any_object(), mapping::metadata_kind());
    match vrl::compiler::compile_with_external(
        source,
        &functions,
        &external,
        CompileConfig::default(),
    ) {
        Ok(compiled) => Ok(compiled.program),
        Err(diagnostics) => Err(RemapError::Compile(
            Formatter::new(source, diagnostics).to_string(),
        )),
    }
}

pub struct Remap {
    program: Program,
    timezone: TimeZone,
    runtime: Runtime,
    target: TargetValue,
    attributes: AttributeWriter,
    /// The body when the program made it a non-string, as JSON text.
    body: String,
}

/// Counts for one batch, flushed to host counters once per call.
#[derive(Default)]
struct Counts {
    dropped: u64,
    routed: u64,
    dead_lettered: u64,
}

impl Remap {
    pub fn from_config(cfg: &config::Config) -> Result<Self, RemapError> {
        let timezone = TimeZone::parse(&cfg.timezone)
            .ok_or_else(|| RemapError::TimeZone(cfg.timezone.clone()))?;
        Ok(Remap {
            program: compile(&cfg.source)?,
            timezone,
            runtime: Runtime::default(),
            target: mapping::new_target(),
            attributes: AttributeWriter::default(),
            body: String::new(),
        })
    }

    /// Run the program on one record and emit what it makes of it.
    fn remap(&mut self, record: &RecordView<'_>, out: &mut Output, counts: &mut Counts) {
        mapping::load(record, &mut self.target);
        let result = self
            .runtime
            .resolve(&mut self.target, &self.program, &self.timezone);
        self.runtime.clear();
        match result {
            Ok(_) => {}
            Err(Terminate::Abort(ExpressionError::Abort { .. })) => {
                counts.dropped += 1;
                return;
            }
            Err(e) => {
                counts.dead_lettered += 1;
                return dead_letter(record, &e.to_string(), out);
            }
        }
        match Envelope::read(&self.target, record.origin, &mut self.body) {
            Ok(Fate::Drop) => counts.dropped += 1,
            Ok(Fate::Emit(head)) => {
                if head.route != RouteRef::Cleaned {
                    counts.routed += 1;
                }
                let mut writer = out.record(&head);
                self.attributes.write(&self.target.value, &mut writer);
            }
            Err(reason) => {
                counts.dead_lettered += 1;
                dead_letter(record, &reason, out);
            }
        }
    }
}

/// The input record as it came, on the dead-letter route with `reason`.
fn dead_letter(record: &RecordView<'_>, reason: &str, out: &mut Output) {
    let mut head = record.head();
    head.route = RouteRef::Dlq(reason);
    let mut writer = out.record(&head);
    for a in record.attributes {
        writer.attribute(a.key, a.value);
    }
}

impl PackedPlugin for Remap {
    fn init(config: &sluice_plugin_sdk::Config) -> Result<Self, PluginError> {
        Ok(Remap::from_config(&config.parse::<config::Config>()?)?)
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        let mut counts = Counts::default();
        for record in batch.iter() {
            if record.is_cleaned() {
                self.remap(&record, out, &mut counts);
            } else {
                out.keep(&record);
            }
        }
        host::counter_add("dropped", counts.dropped);
        host::counter_add("routed", counts.routed);
        host::counter_add("dead_lettered", counts.dead_lettered);
        Ok(())
    }
}

sluice_plugin_sdk::export_plugin!(Remap);

#[cfg(test)]
mod tests;
