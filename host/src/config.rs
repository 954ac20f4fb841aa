//! The host configuration: one TOML file with a source, an ordered plugin chain, and sinks
//! with the routes each takes.
//!
//! Values may reference the environment as `${VAR}` or `${VAR:-default}` (`$$` is a literal
//! `$`), so one file serves every host and secrets stay out of it; `${secret:NAME}`,
//! `${secret:NAME#json_key}` and `${ssm:/path}` read AWS Secrets Manager and SSM Parameter
//! Store (see [`crate::secrets`]). Unknown keys are rejected.

use crate::route::RouteName;
use crate::secrets::{Resolved, Resolver, SecretError};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Check the path given to --config.")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config {path}, line {line}: environment variable `{var}` is not set. Set it, or give a default as ${{{var}:-value}}."
    )]
    MissingEnv {
        path: PathBuf,
        line: usize,
        var: String,
    },
    #[error("config {path}, line {line}: {source}")]
    Secret {
        path: PathBuf,
        line: usize,
        source: SecretError,
    },
    #[error("config {path}, line {line}: unterminated `${{` (write `$$` for a literal `$`)")]
    BadInterpolation { path: PathBuf, line: usize },
    #[error(
        "config {path}, line {line}: environment variable `{var}` holds {quote}, which a single-quoted TOML string cannot hold. Put ${{{var}}} in double quotes instead."
    )]
    Unquotable {
        path: PathBuf,
        line: usize,
        var: String,
        quote: &'static str,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole host configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    /// The plugin chain, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Sinks by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Where the file was read from; relative plugin paths resolve against its directory.
    #[serde(skip)]
    pub path: PathBuf,
    /// The secrets the file referenced, with their values (`Debug` shows the names only).
    #[serde(skip)]
    pub secrets: Resolved,
    /// The file as parsed after interpolation, to tell which keys a reload changes.
    #[serde(skip)]
    pub values: Values,
}

/// A config's keys and values after interpolation. Its `Debug` form shows neither, as
/// values may be secrets.
#[derive(Clone, Default, PartialEq)]
pub struct Values(pub toml::Table);

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Values({} tables and keys)", self.0.len())
    }
}

impl Values {
    /// The dotted keys (`sinks.search.auth.password`, `plugins[0].config.x`) whose values
    /// differ between `self` and `other`, or that only one of them has.
    pub fn changed_keys(&self, other: &Values) -> Vec<String> {
        let mut keys = Vec::new();
        diff_tables("", &self.0, &other.0, &mut keys);
        keys
    }
}

fn diff_tables(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        diff_values(key, a.get(name), b.get(name), out);
    }
}

fn diff_values(
    key: String,
    a: Option<&toml::Value>,
    b: Option<&toml::Value>,
    out: &mut Vec<String>,
) {
    use toml::Value;
    match (a, b) {
        (Some(Value::Table(a)), Some(Value::Table(b))) => diff_tables(&key, a, b, out),
        (Some(Value::Array(a)), Some(Value::Array(b)))
            if a.len() == b.len() && a.iter().chain(b).all(Value::is_table) =>
        {
            for (i, (a, b)) in a.iter().zip(b).enumerate() {
                diff_values(format!("{key}[{i}]"), Some(a), Some(b), out);
            }
        }
        (a, b) if a != b => out.push(key),
        _ => {}
    }
}

/// One plugin in the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A name for logs, metrics and dead-letter reasons.
    pub name: String,
    /// The `.wasm` component; relative to the config file's directory.
    pub path: PathBuf,
    /// Longest a single call (one batch) may run before it is interrupted.
    #[serde(default = "default_plugin_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear-memory limit of one instance, in MiB.
    #[serde(default = "default_plugin_memory_mb")]
    pub memory_limit_mb: u64,
    /// At most this many records out per record in (plus 1,000); more is a plugin failure.
    #[serde(default = "default_max_output_factor")]
    pub max_output_factor: usize,
    /// What happens to a batch when a call fails: `dead_letter` it (the default), or
    /// `pass_through` it unchanged to the next stage — right for plugins that only observe,
    /// such as metrics, so logs keep flowing while the failure is reported.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// What the host holds the plugin to besides the contract (see [`crate::role`]); none
    /// by default.
    #[serde(default, deserialize_with = "role_named")]
    pub role: Option<Role>,
    /// With several pipeline workers (`pipeline.workers`): `per_worker` instances, each
    /// seeing its worker's partitions, or `one` instance every worker calls, for a plugin
    /// whose state merges partitions. By default `one` for `role = "metrics"` (a service's
    /// windows and alerts cover every partition the host reads), else `per_worker`.
    #[serde(default)]
    pub instances: Option<Instances>,
    /// The plugin's own configuration, passed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    DeadLetter,
    PassThrough,
}

/// How many instances of a plugin the pipeline workers run (see `PluginConfig::instances`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instances {
    PerWorker,
    One,
}

impl PluginConfig {
    /// Whether every pipeline worker calls one instance of this plugin.
    pub fn shared_by_workers(&self) -> bool {
        match self.instances {
            Some(instances) => instances == Instances::One,
            None => self.role == Some(Role::Metrics),
        }
    }
}

/// A plugin's part in the pipeline beyond transforming records, declared as `role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It generates the pipeline's metrics: its failures raise `MetricsGenerationFailed`,
    /// and what it emits on the `metrics` route must be a metric.
    Metrics,
}

/// `role`, refused by name when it is no role the host knows.
fn role_named<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Role>, D::Error> {
    let name = String::deserialize(d)?;
    match name.as_str() {
        "metrics" => Ok(Some(Role::Metrics)),
        _ => Err(serde::de::Error::custom(format!(
            "`role = \"{name}\"` is no role: the one role is \"metrics\" (the plugin that generates the metrics); leave `role` out for any other plugin"
        ))),
    }
}

fn default_plugin_timeout_ms() -> u64 {
    2_000
}
fn default_plugin_memory_mb() -> u64 {
    64
}
fn default_max_output_factor() -> usize {
    16
}

/// Most pipeline workers a host runs (`pipeline.workers`).
const MAX_WORKERS: usize = 64;

/// How batches move between the source, the chain and the sinks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Pipeline threads, each with its own plugin instances and a share of the source's
    /// partitions (`partition mod workers`); 0 = one per available core.
    pub workers: usize,
    /// Batches buffered between stages; when full, the source pauses (backpressure).
    pub channel_capacity: usize,
    /// How often plugins get `tick(watermark)`.
    pub tick_interval_ms: u64,
    /// With no input for this long, the watermark advances with the wall clock so windows
    /// on a quiet topic still close.
    pub idle_watermark_ms: u64,
    /// On SIGTERM/SIGINT, how long to wait for sinks to acknowledge in-flight data.
    pub drain_timeout_ms: u64,
    /// Largest snapshot of one plugin's state for one source partition, in MiB (contract
    /// 0.2.0): a larger one is refused, naming the plugin and this key.
    pub max_state_mb: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 0,
            channel_capacity: 4,
            tick_interval_ms: 1_000,
            idle_watermark_ms: 10_000,
            drain_timeout_ms: 30_000,
            max_state_mb: 8,
        }
    }
}

/// The admin HTTP endpoint (health, metrics, taps).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `host:port`, loopback by default; empty disables it.
    pub listen: String,
    /// When set, every route but `/healthz` (liveness) asks for
    /// `Authorization: Bearer <token>`: set it when `listen` is not loopback. May be a
    /// `${secret:…}`.
    pub token: Option<String>,
    /// PEM certificate chain and private key: with both set the endpoint speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9898".into(),
            token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field(
                "token",
                &self.token.as_ref().map(|_| crate::secrets::REDACTED),
            )
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl AdminConfig {
    /// Whether `listen` is reachable from other machines: not a loopback address.
    pub fn is_exposed(&self) -> bool {
        if self.listen.is_empty() {
            return false;
        }
        let host = match self.listen.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => self.listen.as_str(),
        };
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => !ip.is_loopback(),
            Err(_) => host != "localhost",
        }
    }
}

/// `[reload]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the plugins' directories for changes.
    pub watch: bool,
    /// Quiet time after the last file event before reloading (a copy is many events).
    pub debounce_ms: u64,
    /// What to do when a plugin's file disappears.
    pub on_removed: OnRemoved,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            debounce_ms: 500,
            on_removed: OnRemoved::Keep,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRemoved {
    /// Keep running the version already loaded.
    #[default]
    Keep,
    /// Take the stage out: records pass it unchanged.
    Bypass,
}

impl Config {
    /// Read, interpolate, parse and check a config file (without loading plugins).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse config text as if read from `path`; references to secrets are fetched.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut resolver = Resolver::default();
        let text = interpolate_with(text, path, |name| resolver.lookup(name))?;
        let parse = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: crate::secrets::redact(&e.to_string()).into_owned(),
        };
        let values = Values(toml::from_str(&text).map_err(parse)?);
        let mut config: Config = toml::from_str(&text).map_err(parse)?;
        config.path = path.to_owned();
        config.secrets = resolver.into_resolved();
        config.values = values;
        config.check()?;
        Ok(config)
    }

    /// What is allowed but probably a mistake, one line each, for `sluice validate`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let admin = &self.admin;
        if admin.is_exposed() && admin.token.is_none() && admin.tls_cert.is_none() {
            warnings.push(format!(
                "admin.listen = \"{}\" is reachable from other machines, and neither admin.token nor admin.tls_cert is set: anyone who can reach it can read /metrics and tap records. Set admin.token (it may be a ${{secret:…}}) and admin.tls_cert/tls_key, or listen on 127.0.0.1.",
                admin.listen
            ));
        }
        for reference in self.secrets.short() {
            warnings.push(format!(
                "${{{reference}}} is shorter than {} characters: it is hidden where the config is printed but not scrubbed from log lines and error messages, where it would scrub ordinary words. Use a longer secret.",
                crate::secrets::MIN_REDACTED_LEN
            ));
        }
        warnings
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The chain's plugin entries, their paths resolved against the config file's directory.
    pub fn resolved_plugins(&self) -> Vec<PluginConfig> {
        self.plugins
            .iter()
            .map(|p| PluginConfig {
                path: self.resolve(&p.path),
                ..p.clone()
            })
            .collect()
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(path)
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.admin.tls_cert.is_some() != self.admin.tls_key.is_some() {
            return Err(self.invalid(
                "admin.tls_cert",
                "set both admin.tls_cert and admin.tls_key (PEM files), or neither",
            ));
        }
        if self
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(self.invalid(
                "admin.token",
                "is empty: leave it out, or give it a value (e.g. a ${secret:…})",
            ));
        }
        self.source
            .check()
            .map_err(|(key, msg)| self.invalid(format!("source.{key}"), msg))?;

        let mut names = std::collections::HashSet::new();
        for (i, plugin) in self.plugins.iter().enumerate() {
            let key = format!("plugins[{i}]");
            if plugin.name.trim().is_empty() {
                return Err(self.invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(plugin.name.as_str()) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!(
                        "`{}` is used twice; give each plugin its own name",
                        plugin.name
                    ),
                ));
            }
            let path = self.resolve(&plugin.path);
            if plugin.native_name().is_some() {
                continue;
            }
            if !path.is_file() {
                return Err(self.invalid(
                    format!("{key}.path"),
                    format!(
                        "plugin file {} does not exist. Build the plugins (dev/build-plugins) or fix the path; relative paths start at the config file's directory.",
                        path.display()
                    ),
                ));
            }
            if plugin.timeout_ms == 0 {
                return Err(self.invalid(format!("{key}.timeout_ms"), "must be at least 1"));
            }
            if !(1..=4096).contains(&plugin.memory_limit_mb) {
                return Err(self.invalid(
                    format!("{key}.memory_limit_mb"),
                    "must be between 1 and 4096",
                ));
            }
        }

        if self.sinks.is_empty() {
            return Err(self.invalid(
                "sinks",
                "no sink is configured; add at least one [sinks.<name>] table",
            ));
        }
        for (name, sink) in &self.sinks {
            sink.check()
                .map_err(|(key, msg)| self.invalid(format!("sinks.{name}.{key}"), msg))?;
            for route in sink.routes() {
                if route.as_str().trim().is_empty() {
                    return Err(self.invalid(
                        format!("sinks.{name}.routes"),
                        "route names must not be empty",
                    ));
                }
            }
        }
        if !self
            .sinks
            .values()
            .any(|s| s.routes().contains(&RouteName::Dlq))
        {
            return Err(self.invalid(
                "sinks",
                "no sink takes the `dlq` route, so rejected records would have nowhere to go; add `\"dlq\"` to the routes of a sink",
            ));
        }
        self.check_exactly_once()?;
        if self.pipeline.workers > MAX_WORKERS {
            return Err(self.invalid(
                "pipeline.workers",
                format!("{} workers is more than {MAX_WORKERS}: each runs its own plugin instances; use 0 for one per core, or fewer", self.pipeline.workers),
            ));
        }
        if self.pipeline.channel_capacity == 0 {
            return Err(self.invalid("pipeline.channel_capacity", "must be at least 1"));
        }
        if !(1..=1024).contains(&self.pipeline.max_state_mb) {
            return Err(self.invalid("pipeline.max_state_mb", "must be between 1 and 1024"));
        }
        Ok(())
    }

    /// Reading exactly once, every Kafka sink writes through one transactional producer
    /// on the source's cluster: same brokers, same options.
    fn check_exactly_once(&self) -> Result<(), ConfigError> {
        let SourceConfig::Kafka(source) = &self.source else {
            return Ok(());
        };
        if !source.exactly_once {
            return Ok(());
        }
        let mut first: Option<(&str, &crate::sink::kafka::KafkaSinkConfig)> = None;
        for (name, sink) in &self.sinks {
            let SinkConfig::Kafka(sink) = sink else {
                continue;
            };
            if sink.brokers != source.brokers {
                return Err(self.invalid(
                    format!("sinks.{name}.brokers"),
                    format!(
                        "with `source.exactly_once` every Kafka sink writes in the source's transactions, so it must use the source's brokers (`{}`), not `{}`",
                        source.brokers, sink.brokers
                    ),
                ));
            }
            if sink.options.contains_key("transactional.id") {
                return Err(self.invalid(
                    format!("sinks.{name}.options"),
                    "set the transactional id with `source.transactional_id`, not in a sink's options",
                ));
            }
            match first {
                Some((other, o)) if o.security != sink.security => {
                    return Err(self.invalid(
                        format!("sinks.{name}.security"),
                        format!(
                            "with `source.exactly_once` every Kafka sink shares one producer: give it the same `security` as sink `{other}`"
                        ),
                    ));
                }
                Some((other, o)) if o.options != sink.options => {
                    return Err(self.invalid(
                        format!("sinks.{name}.options"),
                        format!(
                            "with `source.exactly_once` every Kafka sink shares one producer: give it the same `options` as sink `{other}`"
                        ),
                    ));
                }
                Some(_) => {}
                None => first = Some((name, sink)),
            }
        }
        Ok(())
    }

    /// The librdkafka options every Kafka sink shares (exactly once), or none.
    pub fn kafka_sink_options(&self) -> BTreeMap<String, String> {
        self.sinks
            .values()
            .find_map(|s| match s {
                SinkConfig::Kafka(k) => Some(k.options.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The TLS and SASL settings every Kafka sink shares (exactly once); the source's
    /// without a Kafka sink, the transactional producer being on the source's cluster.
    pub fn kafka_sink_security(&self) -> crate::kafka_security::KafkaSecurity {
        let sinks = self.sinks.values().find_map(|s| match s {
            SinkConfig::Kafka(k) => Some(k.security.clone()),
            _ => None,
        });
        match (&self.source, sinks) {
            (_, Some(security)) => *security,
            (SourceConfig::Kafka(source), None) => (*source.security).clone(),
            _ => Default::default(),
        }
    }

    /// The routes some sink takes.
    pub fn routed(&self) -> std::collections::BTreeSet<&RouteName> {
        self.sinks.values().flat_map(|s| s.routes()).collect()
    }
}

impl PluginConfig {
    /// `native:<name>` as its path selects the bundled plugin's logic compiled into the
    /// host (feature `native-plugins`, for the benchmark) instead of a wasm file.
    pub fn native_name(&self) -> Option<&str> {
        self.path.to_str()?.strip_prefix("native:")
    }

    /// The plugin's own config as JSON text, for its `init`.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".into())
    }
}

/// Where in the TOML text a `${…}` stands; its value is escaped for that place, so a
/// secret holding `"` or `\` cannot break the file or change its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Outside strings: the value is TOML itself (a number, `true`).
    Bare,
    /// `"…"` and `"""…"""`: escaped as a basic string's content.
    Basic,
    Multiline,
    /// `'…'` and `'''…'''`: no escapes exist; a value that cannot be held is an error.
    Literal,
    MultilineLiteral,
    /// `# …`: left alone, so examples in comments need no escaping.
    Comment,
}

/// Replace `${VAR}` and `${VAR:-default}` with values from `lookup`; `$$` is a literal `$`.
/// Comments are left alone. Inside a quoted string the value is escaped as that string
/// needs. An empty value counts as unset.
pub fn interpolate(
    text: &str,
    path: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    interpolate_with(
        text,
        path,
        |name| Ok(lookup(name).filter(|v| !v.is_empty())),
    )
}

/// [`interpolate`] with a lookup that may fail (a secret that cannot be read): its error
/// is reported with the line. `Ok(None)` takes the default, if any; a value is used as
/// given, even empty.
pub fn interpolate_with(
    text: &str,
    path: &Path,
    mut lookup: impl FnMut(&str) -> Result<Option<String>, SecretError>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut place = Place::Bare;
    let mut line = 1;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '$' && place != Place::Comment {
            let after = &rest[1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body
                    .find(['}', '\n'])
                    .filter(|&end| body[end..].starts_with('}'))
                    .ok_or_else(|| ConfigError::BadInterpolation {
                        path: path.to_owned(),
                        line,
                    })?;
                let (name, default) = match body[..end].split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (&body[..end], None),
                };
                let found = lookup(name).map_err(|source| ConfigError::Secret {
                    path: path.to_owned(),
                    line,
                    source,
                })?;
                let value = match (found, default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        return Err(ConfigError::MissingEnv {
                            path: path.to_owned(),
                            line,
                            var: name.to_owned(),
                        });
                    }
                };
                push_value(&mut out, &value, place).map_err(|quote| ConfigError::Unquotable {
                    path: path.to_owned(),
                    line,
                    var: name.to_owned(),
                    quote,
                })?;
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
            continue;
        }
        // Follow the TOML syntax far enough to know where the next `${` stands.
        let (taken, next) = step(rest, place);
        line += taken.matches('\n').count();
        out.push_str(taken);
        rest = &rest[taken.len()..];
        place = next;
    }
    Ok(out)
}

/// The text at the start of `rest` that moves from `place` to the returned place.
fn step(rest: &str, place: Place) -> (&str, Place) {
    let c = rest.chars().next().map_or(0, char::len_utf8);
    let one = &rest[..c];
    match place {
        Place::Bare if rest.starts_with("\"\"\"") => (&rest[..3], Place::Multiline),
        Place::Bare if rest.starts_with("'''") => (&rest[..3], Place::MultilineLiteral),
        Place::Bare if one == "\"" => (one, Place::Basic),
        Place::Bare if one == "'" => (one, Place::Literal),
        Place::Bare if one == "#" => (one, Place::Comment),
        // An escape: the character after the backslash never ends the string.
        Place::Basic | Place::Multiline if one == "\\" => {
            let next = rest[1..].chars().next().map_or(0, char::len_utf8);
            (&rest[..1 + next], place)
        }
        Place::Basic if one == "\"" || one == "\n" => (one, Place::Bare),
        Place::Multiline if rest.starts_with("\"\"\"") => (&rest[..3], Place::Bare),
        Place::Literal if one == "'" || one == "\n" => (one, Place::Bare),
        Place::MultilineLiteral if rest.starts_with("'''") => (&rest[..3], Place::Bare),
        Place::Comment if one == "\n" => (one, Place::Bare),
        _ => (one, place),
    }
}

/// Append `value` as `place` needs it; `Err` names what a literal string cannot hold.
fn push_value(out: &mut String, value: &str, place: Place) -> Result<(), &'static str> {
    match place {
        Place::Bare | Place::Comment => out.push_str(value),
        Place::Basic | Place::Multiline => {
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
        }
        Place::Literal if value.contains(['\'', '\n']) => return Err("a `'` or a line break"),
        Place::MultilineLiteral if value.contains("'''") => return Err("`'''`"),
        Place::Literal | Place::MultilineLiteral => out.push_str(value),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BROKERS" => Some("k1:9092".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn too_many_pipeline_workers_fail_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let text = "[source]\ntype = \"stdin\"\n[sinks.out]\ntype = \"file\"\npath = \"-\"\nroutes = [\"cleaned\", \"dlq\"]\n[pipeline]\nworkers = WORKERS\n";
        std::fs::write(&path, text.replace("WORKERS", "65")).unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("pipeline.workers") && error.contains("0 for one per core"),
            "{error}"
        );
        std::fs::write(&path, text.replace("WORKERS", "64")).unwrap();
        Config::load(&path).unwrap();
    }

    #[test]
    fn interpolates_variables_defaults_and_escapes() {
        let p = Path::new("t.toml");
        assert_eq!(
            interpolate("a=${BROKERS} b=${NOPE:-x:1} c=$$HOME d=$x", p, env).unwrap(),
            "a=k1:9092 b=x:1 c=$HOME d=$x"
        );
        assert_eq!(interpolate("${EMPTY:-dflt}", p, env).unwrap(), "dflt");
        assert_eq!(
            interpolate("  # uses ${UNSET}\nx=${BROKERS}", p, env).unwrap(),
            "  # uses ${UNSET}\nx=k1:9092"
        );
    }

    fn secret(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("p\"a\\ss\nword".into()),
            "QUOTE" => Some("it's".into()),
            _ => None,
        }
    }

    #[test]
    fn a_value_is_escaped_for_the_string_it_stands_in() {
        let p = Path::new("t.toml");
        let toml_text = interpolate(
            "a = \"${PASSWORD}\"\nb = \"\"\"\n${PASSWORD}\"\"\"\nc = 'x${NOPE:-1}'\n# ${UNSET} \"\nd = \"\\\"${PASSWORD}\" # ${UNSET}\n",
            p,
            secret,
        )
        .unwrap();
        let parsed: toml::Table = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("p\"a\\ss\nword"));
        assert_eq!(parsed["b"].as_str(), Some("p\"a\\ss\nword"));
        assert_eq!(parsed["c"].as_str(), Some("x1"));
        assert_eq!(parsed["d"].as_str(), Some("\"p\"a\\ss\nword"));
    }

    #[test]
    fn a_value_a_literal_string_cannot_hold_is_refused_by_name() {
        let err = interpolate("a = '${QUOTE}'", Path::new("t.toml"), secret).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("QUOTE") && msg.contains("double quotes"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_plugin_role_is_refused_naming_the_key() {
        let text = "[source]\ntype = \"stdin\"\n\n[[plugins]]\nname = \"m\"\npath = \"m.wasm\"\nrole = \"metric\"\n";
        let msg = Config::from_toml(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 7") && msg.contains("`role = \"metric\"` is no role"),
            "{msg}"
        );
    }

    #[test]
    fn a_secret_that_cannot_be_read_names_the_line_and_the_reference() {
        let lookup = |name: &str| match crate::secrets::Reference::parse(name)? {
            Some(_) => Err(SecretError::Denied {
                service: "Secrets Manager",
                id: name["secret:".len()..].to_owned(),
                action: "secretsmanager:GetSecretValue",
            }),
            None => Ok(None),
        };
        let text = "a = 1\nb = \"${secret:prod/search#password}\"";
        let msg = interpolate_with(text, Path::new("t.toml"), lookup)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 2")
                && msg.contains("`prod/search#password`")
                && msg.contains("secretsmanager:GetSecretValue"),
            "{msg}"
        );
        let bad = interpolate_with("x = \"${secret:}\"", Path::new("t.toml"), lookup);
        assert!(bad.unwrap_err().to_string().contains("names no secret"));
    }

    #[test]
    fn an_admin_endpoint_is_exposed_unless_on_loopback() {
        let admin = |listen: &str| AdminConfig {
            listen: listen.into(),
            ..AdminConfig::default()
        };
        for exposed in [
            "0.0.0.0:9898",
            "10.0.3.7:9898",
            "[::]:9898",
            "sluice.internal:9898",
        ] {
            assert!(admin(exposed).is_exposed(), "{exposed}");
        }
        for local in [
            "127.0.0.1:9898",
            "[::1]:9898",
            "localhost:9898",
            "127.0.0.2:1",
            "",
        ] {
            assert!(!admin(local).is_exposed(), "{local}");
        }
        let debug = format!(
            "{:?}",
            AdminConfig {
                token: Some("tok-3f9a".into()),
                ..admin("")
            }
        );
        assert!(
            debug.contains("<redacted>") && !debug.contains("tok-3f9a"),
            "{debug}"
        );
    }

    #[test]
    fn missing_variable_names_it_and_the_line() {
        let err = interpolate("a=1\nb=\"${MISSING_VAR}\"", Path::new("t.toml"), env).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("MISSING_VAR") && msg.contains("line 2"),
            "{msg}"
        );
    }

    /// A Kafka source reading exactly once with `extra` source keys, and Kafka sinks
    /// `cleaned` and `dlq` given as (brokers, options) TOML.
    fn exactly_once_config(extra: &str, cleaned: (&str, &str), dlq: (&str, &str)) -> String {
        let sink = |name: &str, route: &str, (brokers, options): (&str, &str)| {
            format!(
                "[sinks.{name}]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{name}\"\nroutes = [\"{route}\"]\n{options}\n"
            )
        };
        format!(
            "[source]\ntype = \"kafka\"\nbrokers = \"k1:9092\"\ntopics = [\"raw\"]\ngroup_id = \"g\"\nexactly_once = true\n{extra}\n{}{}",
            sink("cleaned", "cleaned", cleaned),
            sink("dlq", "dlq", dlq)
        )
    }

    #[test]
    fn exactly_once_sinks_share_one_security_table_which_the_producer_uses() {
        let load = |text: String| Config::from_toml(&text, Path::new("t.toml"));
        let scram =
            "security = { sasl_mechanism = \"scram-sha-512\", username = \"u\", password = \"p\" }";
        let config = load(exactly_once_config(
            "",
            ("k1:9092", scram),
            ("k1:9092", scram),
        ))
        .unwrap();
        assert_eq!(config.kafka_sink_security().username.as_deref(), Some("u"));

        let other = load(exactly_once_config("", ("k1:9092", scram), ("k1:9092", "")));
        let msg = other.unwrap_err().to_string();
        assert!(
            msg.contains("sinks.dlq.security") && msg.contains("same `security`"),
            "{msg}"
        );

        let wrong = load(exactly_once_config(
            "",
            (
                "k1:9092",
                "security = { sasl_mechanism = \"scram-sha-512\", username = \"u\" }",
            ),
            ("k1:9092", ""),
        ));
        let msg = wrong.unwrap_err().to_string();
        assert!(msg.contains("sinks.cleaned.security.password"), "{msg}");
    }

    #[test]
    fn exactly_once_needs_every_kafka_sink_on_the_sources_cluster_with_one_producer() {
        let load = |text: String| Config::from_toml(&text, Path::new("t.toml"));
        let same = ("k1:9092", "options = { \"linger.ms\" = \"10\" }");
        let config = load(exactly_once_config("", same, same)).unwrap();
        assert_eq!(
            config
                .kafka_sink_options()
                .get("linger.ms")
                .map(String::as_str),
            Some("10")
        );

        let other_cluster = load(exactly_once_config("", same, ("k2:9092", same.1)));
        let msg = other_cluster.unwrap_err().to_string();
        assert!(
            msg.contains("sinks.dlq.brokers") && msg.contains("k1:9092"),
            "{msg}"
        );

        let other_options = load(exactly_once_config("", same, ("k1:9092", "")));
        let msg = other_options.unwrap_err().to_string();
        assert!(
            msg.contains("sinks.dlq.options") && msg.contains("same `options`"),
            "{msg}"
        );

        let timeout = load(exactly_once_config(
            "transaction_interval_ms = 5000\ntransaction_timeout_ms = 6000",
            same,
            same,
        ));
        let msg = timeout.unwrap_err().to_string();
        assert!(msg.contains("source.transaction_timeout_ms"), "{msg}");
    }
}
