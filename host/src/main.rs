//! The `sluice` command line. Errors are reported here, at the edge, with what to try.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sluice::batch::Batch;
use sluice::chain::{Chain, ChainOutput, Stage};
use sluice::codec::{self, DecodeOptions, InvalidJson};
use sluice::config::{Config, PluginConfig};
use sluice::generator::{Burst, GenOptions, Generator};
use sluice::plugin::PluginRuntime;
use sluice::topology::Topology;
use sluice::{Origin, runner, time};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

// Records are many small strings made and freed at batch rate on several threads; glibc's
// allocator spent a quarter of the wasm chain's CPU consolidating and unlinking chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka log pipeline with sandboxed WebAssembly plugins"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "SLUICE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `sluice=debug`).
    #[arg(long, global = true, default_value = "info", env = "SLUICE_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline described by a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file: keys, plugin files, that each plugin compiles, implements the
    /// contract and accepts its config. Exits non-zero naming what is wrong.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Generate realistic multi-service application logs into a Kafka topic or stdout.
    Gen(GenArgs),
    /// Work with plugin files.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Athena statements for the lake the config writes.
    #[command(subcommand)]
    Athena(AthenaCommand),
    /// The Kafka topics the config reads and writes.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Kibana / OpenSearch Dashboards saved objects.
    #[command(subcommand)]
    Kibana(KibanaCommand),
    /// Stream a sample of the records at a point of a running host's pipeline as NDJSON:
    /// route:<name>, dlq, plugin:<name>:in or plugin:<name>:out.
    Tap(TapArgs),
    /// A live view of a running host: records a second in and out of each stage and sink,
    /// failed calls, dead letters, p99 call time, plugin memory, fail states, and each
    /// partition's lag and committed offset. `q` quits.
    Top(TopArgs),
    /// Run raw lake objects through the chain and sinks again.
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
        /// s3://bucket/prefix/raw/dt=…/ (a prefix) or one raw object.
        #[arg(long)]
        from: String,
        /// Last partition included: 2026-11-25 or 2026-11-25T07.
        #[arg(long)]
        until: Option<String>,
        /// Completed objects, for resuming.
        #[arg(long, default_value = "sluice-backfill.state")]
        state: PathBuf,
    },
}

#[derive(Subcommand)]
enum KibanaCommand {
    /// Import the saved objects (data views, saved search, dashboard) through
    /// POST /api/saved_objects/_import; re-running overwrites them in place.
    Import {
        /// Kibana's base URL, e.g. http://kibana:5601.
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "kibana/sluice.ndjson")]
        file: PathBuf,
        /// A Kibana space (default: the default space).
        #[arg(long)]
        space: Option<String>,
        /// The target is OpenSearch Dashboards (osd-xsrf header).
        #[arg(long)]
        opensearch_dashboards: bool,
        /// A full Authorization header value ("Basic …" or "ApiKey …").
        #[arg(long, env = "KIBANA_AUTH", hide_env_values = true)]
        authorization: Option<String>,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the topics the config needs that are missing (the source's, each Kafka
    /// sink's, the plugin state topic) and check those present; exits non-zero on drift,
    /// or with --check on a missing topic.
    Ensure {
        #[arg(long, short)]
        config: PathBuf,
        /// Only report: create nothing.
        #[arg(long)]
        check: bool,
        /// Partitions of a new topic (default: the broker's); a new state topic gets as
        /// many as the widest source topic.
        #[arg(long)]
        partitions: Option<i32>,
    },
}

#[derive(Subcommand)]
enum AthenaCommand {
    /// Create the database and tables of the config's S3 sinks through Athena
    /// (StartQueryExecution), idempotently: what `ddl` prints, run with each sink's
    /// workgroup and output location.
    Apply {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print CREATE EXTERNAL TABLE statements for the config's S3 sinks.
    Ddl {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct TapArgs {
    /// Where: route:<name> (route:cleaned included), dlq, plugin:<name>:in, plugin:<name>:out.
    point: String,
    /// The host's admin endpoint (`admin.listen`).
    #[arg(long, default_value = "127.0.0.1:9898", env = "SLUICE_ADMIN")]
    admin: String,
    /// Clauses on a record's fields, all to match: field=value, field!=value, field~text,
    /// joined with &&.
    #[arg(long)]
    filter: Option<String>,
    /// Records a second at most (the rest pass untapped).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Stop after this many records.
    #[arg(long, default_value_t = 1000)]
    limit: u64,
    /// The admin endpoint's bearer token (`admin.token`).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate of the CA that signed `admin.tls_cert`, for an `https://` admin
    /// endpoint whose certificate no public CA signed.
    #[arg(long, env = "SLUICE_ADMIN_CA")]
    ca_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TopArgs {
    /// The host's admin endpoint (`admin.listen`).
    #[arg(long, default_value = "127.0.0.1:9898", env = "SLUICE_ADMIN")]
    admin: String,
    /// Milliseconds between looks; rates are over this interval.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    interval_ms: u64,
    /// Print one frame as plain text (rates over one interval) and exit.
    #[arg(long)]
    once: bool,
    /// The admin endpoint's bearer token (`admin.token`).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate of the CA that signed `admin.tls_cert`, for an `https://` admin
    /// endpoint whose certificate no public CA signed.
    #[arg(long, env = "SLUICE_ADMIN_CA")]
    ca_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Kafka bootstrap servers; ignored with `--output -`.
    #[arg(long, default_value = "127.0.0.1:9092", env = "SLUICE_KAFKA")]
    brokers: String,
    #[arg(long, default_value = "raw-logs")]
    topic: String,
    /// Write lines to stdout (`-`) instead of Kafka.
    #[arg(long)]
    output: Option<String>,
    /// How many lines.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Lines per second to send (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Event time of the first line: `now` or e.g. 2026-11-25T10:00:00Z.
    #[arg(long, default_value = "now")]
    start: String,
    /// Lines per second of event time.
    #[arg(long, default_value_t = 100.0)]
    events_per_second: f64,
    /// Share of lines repeated exactly (a producer retrying).
    #[arg(long, default_value_t = 0.01)]
    duplicates: f64,
    /// Share of logfmt lines.
    #[arg(long, default_value_t = 0.05)]
    logfmt: f64,
    /// Share of plain-text lines.
    #[arg(long, default_value_t = 0.03)]
    plain: f64,
    /// An error burst, SERVICE@START_S+DURATION_S[:ERROR_RATIO] in event-time seconds from
    /// the start, e.g. checkout@600+120:0.5. Repeatable.
    #[arg(long)]
    burst: Vec<Burst>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// The plugin component.
    plugin: Option<PathBuf>,
    /// The plugin's config as JSON.
    #[arg(long, default_value = "{}")]
    config: String,
    /// Run the chain of this host config instead of one plugin.
    #[arg(long, conflicts_with = "plugin")]
    chain: Option<PathBuf>,
    /// A test spec (TOML): inputs and expected outputs (docs/plugin-tests.md). Runs the
    /// plugins it names, or PLUGIN / --chain when given.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Per-call timeout of every plugin, overriding its config [default: 2000 for one
    /// plugin].
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Linear-memory limit of each plugin instance in MiB, overriding its config [default:
    /// 64 for one plugin]. Interpreter-based plugins (Python, JavaScript) need 128 or more.
    #[arg(long)]
    memory_mb: Option<u64>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run one plugin (or a config's chain) over NDJSON/text lines on stdin and print what
    /// it emits, with routes. Windows are closed at the end of input. With `--spec`, run a
    /// spec file's test cases instead and exit non-zero naming what differed.
    Test(TestArgs),
    /// Start a plugin project: NAME/ with the contract's WIT, the plugin, a build script,
    /// a spec it passes (`plugin test --spec NAME/test.toml`) and a README.
    New {
        name: String,
        #[arg(long, value_enum)]
        lang: sluice::scaffold::Lang,
        /// Where to create NAME/.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Show a plugin's contract version, imports and exports.
    Inspect { plugin: PathBuf },
}

fn main() -> std::process::ExitCode {
    sluice::memory::configure_allocators();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("error: {e:#}");
            eprintln!("{}", sluice::secrets::redact(&message));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The CA certificate `--ca-file` names, if any.
fn admin_ca(path: Option<&std::path::Path>) -> Result<Option<reqwest::Certificate>> {
    let Some(path) = path else { return Ok(None) };
    let pem =
        std::fs::read(path).with_context(|| format!("reading --ca-file {}", path.display()))?;
    let ca = reqwest::Certificate::from_pem(&pem).with_context(|| {
        format!(
            "--ca-file {}: not a PEM certificate (give the CA that signed admin.tls_cert)",
            path.display()
        )
    })?;
    Ok(Some(ca))
}

fn tap(args: TapArgs) -> Result<()> {
    let ca = admin_ca(args.ca_file.as_deref())?;
    let request = sluice::tap::ClientRequest {
        ca: ca.as_ref(),
        admin: &args.admin,
        point: &args.point,
        filter: args.filter.as_deref(),
        rate: args.rate,
        limit: args.limit,
        token: args.token.as_deref(),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = std::time::Instant::now();
    let mut out = CountLines::new(std::io::stdout().lock());
    // Ctrl-C (or SIGTERM) ends a tap as its limit does: with the summary line.
    let ended = rt.block_on(async {
        tokio::select! {
            streamed = sluice::tap::stream(&request, &mut out) => streamed.map(|_| ""),
            _ = stop_signal() => Ok(" (stopped)"),
        }
    });
    eprintln!(
        "tap: {} records from {} in {:.1} s{}",
        out.lines,
        args.point,
        started.elapsed().as_secs_f64(),
        ended.as_ref().map_or("", |e| *e)
    );
    ended?;
    Ok(())
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A writer that counts the lines written through it.
struct CountLines<W> {
    inner: W,
    lines: u64,
}

impl<W> CountLines<W> {
    fn new(inner: W) -> Self {
        CountLines { inner, lines: 0 }
    }
}

impl<W: Write> Write for CountLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn top(args: TopArgs) -> Result<()> {
    let options = sluice::top::term::Options {
        ca: admin_ca(args.ca_file.as_deref())?,
        admin: args.admin,
        token: args.token,
        every: Duration::from_millis(args.interval_ms),
    };
    if args.once {
        print!("{}", sluice::top::term::once(&options, 120)?);
        return Ok(());
    }
    sluice::top::term::run(&options)?;
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, not in journald or files.
        .with_ansi(std::io::stderr().is_terminal())
        // Every line passes the secrets' redaction on its way out.
        .with_writer(|| sluice::secrets::RedactingWriter(std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// One arm per subcommand, each only turning its arguments into a call of the library:
/// long as a table of contents is, not as logic.
fn run(command: Command) -> Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(runner::run(config, Arc::new(AtomicBool::new(false))))?;
            Ok(())
        }
        Command::Validate { config } => validate(config),
        Command::Gen(args) => generate(args),
        Command::Tap(args) => tap(args),
        Command::Top(args) => top(args),
        Command::Plugin(PluginCommand::Inspect { plugin }) => inspect(plugin),
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            let made = sluice::scaffold::generate(&dir, &name, lang)?;
            println!(
                "created {0}: build with {0}/build.sh, test with sluice plugin test --spec {0}/test.toml",
                made.display()
            );
            Ok(())
        }
        Command::Kibana(KibanaCommand::Import {
            url,
            file,
            space,
            opensearch_dashboards,
            authorization,
        }) => {
            use sluice::sink::elasticsearch::kibana;
            let options = kibana::ImportOptions {
                url,
                space,
                overwrite: true,
                flavor: if opensearch_dashboards {
                    kibana::Dashboards::OpenSearchDashboards
                } else {
                    kibana::Dashboards::Kibana
                },
                authorization,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let summary = rt.block_on(kibana::import_file(&options, &file))?;
            println!("imported {} saved objects", summary.success_count);
            Ok(())
        }
        Command::Topics(TopicsCommand::Ensure {
            config,
            check,
            partitions,
        }) => ensure_topics(&config, check, partitions),
        Command::Athena(AthenaCommand::Ddl { config }) => {
            let config = Config::load(&config)?;
            print!("{}", sluice::sink::s3::athena::ddl(&lake_sinks(&config)));
            Ok(())
        }
        Command::Athena(AthenaCommand::Apply { config }) => {
            let config = Config::load(&config)?;
            let lake = lake_sinks(&config);
            if lake.is_empty() {
                bail!("the config has no S3 sink: there is no table to create");
            }
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let started = std::time::Instant::now();
            let ran = rt.block_on(sluice::sink::s3::athena::apply(&lake))?;
            for (statement, id) in &ran {
                let first = statement.lines().next().unwrap_or_default();
                println!("ok\t{id}\t{first}");
            }
            eprintln!(
                "athena: {} statements for {} table(s) succeeded in {:.1} s",
                ran.len(),
                lake.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Backfill {
            config,
            from,
            until,
            state,
        } => {
            let config = Config::load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let started = std::time::Instant::now();
            let s = rt.block_on(sluice::backfill::run(
                config,
                sluice::backfill::BackfillOptions {
                    from,
                    until,
                    state,
                    progress: true,
                },
            ))?;
            eprintln!(
                "backfill: {} objects ({} already done, {} missing), {} records, {} bytes in {:.1} s{}",
                s.objects,
                s.already_done,
                s.missing.len(),
                s.records,
                s.bytes,
                started.elapsed().as_secs_f64(),
                if s.interrupted { " (interrupted)" } else { "" }
            );
            if !s.missing.is_empty() {
                bail!(
                    "{} object(s) missing (S3MissingFile): {}",
                    s.missing.len(),
                    s.missing.join(", ")
                );
            }
            if s.interrupted {
                bail!("interrupted; run the same command again to resume");
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::Test(args)) => match args.spec.clone() {
            Some(spec) => plugin_spec(&spec, &args),
            None => plugin_test(&args),
        },
    }
}

fn validate(path: PathBuf) -> Result<()> {
    let config = Config::load(&path)?;
    let (_runtime, stages) = sluice::topology::load_plugins(&config)?;
    // What can be checked without sending anything (the alert topic exists and is ours).
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    for (name, sink) in &config.sinks {
        rt.block_on(sink.kind().preflight(name))?;
    }
    use std::fmt::Write as _;
    let mut text = format!("{}: OK\n", path.display());
    writeln!(text, "  source: {}", config.source.kind().describe())?;
    for stage in &stages {
        writeln!(
            text,
            "  plugin {}: {}",
            stage.plugin().name,
            stage.plugin().path.display()
        )?;
    }
    for (name, sink) in &config.sinks {
        writeln!(text, "  sink {name}: routes {:?}", sink.routes())?;
    }
    for reference in config.secrets.references() {
        writeln!(text, "  secret: ${{{reference}}} (read)")?;
    }
    for warning in config.warnings() {
        writeln!(text, "  warning: {warning}")?;
    }
    std::io::stdout()
        .lock()
        .write_all(sluice::secrets::redact(&text).as_bytes())?;
    Ok(())
}

fn generate(args: GenArgs) -> Result<()> {
    let options = GenOptions {
        seed: args.seed,
        start_ns: sluice::generator::parse_start(&args.start).map_err(anyhow::Error::msg)?,
        events_per_second: args.events_per_second,
        duplicate_ratio: args.duplicates,
        logfmt_ratio: args.logfmt,
        plain_ratio: args.plain,
        bursts: args.burst,
    };
    let lines = Generator::new(options).take(args.count as usize);
    let pace = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let started = std::time::Instant::now();
    if args.output.as_deref() == Some("-") {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (i, line) in lines.enumerate() {
            if let Some(pace) = pace {
                sleep_until(started + pace * i as u32);
            }
            writeln!(out, "{}", line.text)?;
        }
        return Ok(());
    }
    if let Some(other) = args.output {
        bail!("--output takes only `-` (stdout); got `{other}`. Omit it to write to Kafka.");
    }
    produce(&args.brokers, &args.topic, lines, pace, args.count)
}

fn sleep_until(when: std::time::Instant) {
    let now = std::time::Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

fn produce(
    brokers: &str,
    topic: &str,
    lines: impl Iterator<Item = sluice::generator::Line>,
    pace: Option<Duration>,
    count: u64,
) -> Result<()> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000")
        .create()
        .with_context(|| format!("creating a Kafka producer for {brokers}"))?;
    let started = std::time::Instant::now();
    let mut progress = sluice::progress::Progress::new("gen");
    for (i, line) in lines.enumerate() {
        if let Some(pace) = pace {
            sleep_until(started + pace * i as u32);
        }
        if i % 1000 == 0 {
            progress.tick(|| format!("{i} of {count} lines sent to {topic}"));
        }
        let mut record = BaseRecord::to(topic).key(&line.key).payload(&line.text);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("Kafka at {brokers} did not acknowledge every line within 60 s; is it up (dev/stack status)?"))?;
    progress.finish();
    eprintln!(
        "sent {count} lines to {topic} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn inspect(path: PathBuf) -> Result<()> {
    let runtime = PluginRuntime::new(1, 64)?;
    let interface = sluice::plugin::inspect::inspect(runtime.engine(), &path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", path.display())?;
    writeln!(
        out,
        "  contract: sluice:plugin@{}",
        interface.contract.as_deref().unwrap_or("(none found)")
    )?;
    writeln!(out, "  exports:")?;
    for e in &interface.exports {
        writeln!(out, "    {e}")?;
    }
    writeln!(out, "  imports:")?;
    for i in &interface.imports {
        writeln!(out, "    {i}")?;
    }
    match runtime.compile("inspected", &path) {
        Ok((_, world)) => writeln!(out, "  implements {world}: yes")?,
        Err(e) => writeln!(out, "  implements sluice:plugin/transform: no ({e})")?,
    }
    Ok(())
}

/// The plugin entry of `plugin test PLUGIN.wasm`: `--config` as its config table, the
/// host config's defaults for the rest.
fn one_plugin(path: &std::path::Path, config_json: &str) -> Result<PluginConfig> {
    let config: toml::Table =
        serde_json::from_str(config_json).context("--config must be a JSON object")?;
    Ok(PluginConfig {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into()),
        path: path.to_path_buf(),
        timeout_ms: 2_000,
        memory_limit_mb: 64,
        max_output_factor: 16,
        on_failure: Default::default(),
        role: None,
        instances: None,
        config,
    })
}

/// `--timeout-ms` and `--memory-mb` over every plugin's own settings.
fn with_limits(mut plugins: Vec<PluginConfig>, args: &TestArgs) -> Vec<PluginConfig> {
    for p in &mut plugins {
        p.timeout_ms = args.timeout_ms.unwrap_or(p.timeout_ms);
        p.memory_limit_mb = args.memory_mb.unwrap_or(p.memory_limit_mb);
    }
    plugins
}

/// `plugin test --spec FILE`: every case, a diff for each that fails, non-zero if any did.
fn plugin_spec(path: &std::path::Path, args: &TestArgs) -> Result<()> {
    let spec = sluice::spec::Spec::load(path)?;
    let (plugins, max_state_mb) = match (&args.plugin, &args.chain) {
        (Some(plugin), _) => (vec![one_plugin(plugin, &args.config)?], spec.max_state_mb),
        (None, Some(chain)) => {
            let config = Config::load(chain)?;
            let plugins = config.resolved_plugins();
            (plugins, config.pipeline.max_state_mb)
        }
        (None, None) => (spec.plugins.clone(), spec.max_state_mb),
    };
    if plugins.is_empty() {
        bail!(
            "{} names no plugin: add [[plugins]] or `chain = \"host.toml\"` to it, or give PLUGIN.wasm or --chain",
            path.display()
        );
    }
    let (_runtime, stages) = sluice::spec::load(&with_limits(plugins, args), max_state_mb)?;
    let started = std::time::Instant::now();
    let report = spec.run(&stages);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {} tests", path.display(), spec.len())?;
    for (name, diff) in &report.cases {
        match diff {
            None => writeln!(out, "ok    {name}")?,
            Some(diff) => write!(out, "FAIL  {name}\n{diff}")?,
        }
    }
    let failed = report.failed();
    writeln!(
        out,
        "{} passed, {failed} failed in {:.1} s",
        spec.len() - failed,
        started.elapsed().as_secs_f64()
    )?;
    if failed > 0 {
        bail!(
            "{failed} of {} tests in {} failed",
            spec.len(),
            path.display()
        );
    }
    Ok(())
}

fn plugin_test(args: &TestArgs) -> Result<()> {
    let (_runtime, stages) = match (&args.plugin, &args.chain) {
        (_, Some(path)) => {
            let mut config = Config::load(path)?;
            config.plugins = with_limits(std::mem::take(&mut config.plugins), args);
            let (runtime, stages, _) = Topology::chain(&config)?;
            (runtime, stages)
        }
        (Some(path), None) => {
            let plugin = with_limits(vec![one_plugin(path, &args.config)?], args);
            let (runtime, stages) = sluice::spec::load(&plugin, 8)?;
            let stages = stages
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn Stage>)
                .collect();
            (runtime, stages)
        }
        (None, None) => bail!("give a PLUGIN.wasm or --chain CONFIG"),
    };
    let mut chain = Chain::new(stages, Duration::from_secs(3600));
    let options = DecodeOptions {
        max_message_bytes: 1 << 20,
        invalid_json: InvalidJson::Dlq,
    };
    let now = time::now_ns();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut batch = Vec::new();
    let mut tally = Tally::default();
    let mut progress = sluice::progress::Progress::new("plugin test");
    let mut lines = 0u64;
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        lines += 1;
        let origin = Origin {
            topic: "stdin".into(),
            partition: 0,
            offset: i as i64,
        };
        match codec::decode(line.as_bytes(), origin, now, now, &options) {
            Ok(record) => batch.push(record),
            Err(reason) => {
                tally.dead += 1;
                writeln!(
                    out,
                    "{{\"route\":\"dlq\",\"reason\":{},\"line\":{}}}",
                    serde_json::to_string(&format!("cannot decode: {reason}"))?,
                    serde_json::to_string(&line)?
                )?
            }
        }
        if batch.len() >= 1000 {
            let mut output = ChainOutput::default();
            chain.process(Batch::Records(std::mem::take(&mut batch)), &mut output);
            tally.emit(output, &mut out)?;
            progress.tick(|| format!("{lines} lines, {}", tally.describe()));
        }
    }
    let mut output = ChainOutput::default();
    chain.process(Batch::Records(batch), &mut output);
    tally.emit(output, &mut out)?;
    let mut output = ChainOutput::default();
    chain.tick(true, &mut output);
    tally.emit(output, &mut out)?;
    out.flush()?;
    progress.finish();
    eprintln!(
        "plugin test: {lines} lines, {} in {:.1} s",
        tally.describe(),
        progress.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What `plugin test` wrote: records by route, dead letters, plugin failures.
#[derive(Default)]
struct Tally {
    records: u64,
    dead: u64,
    failures: u64,
}

impl Tally {
    fn describe(&self) -> String {
        format!(
            "{} records out, {} dead letters, {} plugin failures",
            self.records, self.dead, self.failures
        )
    }

    /// Print a chain's output as NDJSON lines with their routes, and count it.
    fn emit(&mut self, output: ChainOutput, out: &mut dyn Write) -> Result<()> {
        for failure in &output.failures {
            eprintln!("plugin failure: {failure}");
        }
        self.failures += output.failures.len() as u64;
        for record in &output.records() {
            let mut line = Vec::new();
            codec::encode_record(record, &mut line);
            writeln!(
                out,
                "{{\"route\":\"{}\",\"record\":{}}}",
                record.route.name(),
                String::from_utf8_lossy(&line)
            )?;
            self.records += 1;
        }
        for (record, reason) in &output.dead {
            writeln!(
                out,
                "{{\"route\":\"dlq\",\"reason\":{},\"record\":{}}}",
                serde_json::to_string(reason)?,
                String::from_utf8_lossy(&codec::record_to_json(record))
            )?;
            self.dead += 1;
        }
        Ok(())
    }
}

/// `sluice topics ensure`: one line per topic; an error if any drifted or (with `--check`)
/// is missing.
fn ensure_topics(config: &std::path::Path, check: bool, partitions: Option<i32>) -> Result<()> {
    use sluice::topics::{Outcome, Purpose};
    let config = Config::load(config)?;
    let needs = sluice::topics::needs(&config);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = std::time::Instant::now();
    let results = rt.block_on(sluice::topics::ensure(&needs, check, partitions))?;
    let (mut wrong, mut created) = (0, 0);
    for (need, outcome) in &results {
        let role = match &need.purpose {
            Purpose::Source => "source".to_owned(),
            Purpose::Sink { sink, .. } => format!("sink `{sink}`"),
            Purpose::State { .. } => "plugin state".to_owned(),
        };
        let state = match outcome {
            Outcome::Present { partitions } => format!("ok ({partitions} partitions)"),
            Outcome::Created { partitions } if *partitions < 0 => {
                created += 1;
                "created (the broker's default partitions)".to_owned()
            }
            Outcome::Created { partitions } => {
                created += 1;
                format!("created ({partitions} partitions)")
            }
            Outcome::Missing => {
                wrong += 1;
                "MISSING".to_owned()
            }
            Outcome::Drift(why) => {
                wrong += 1;
                format!("DRIFT: {why}")
            }
        };
        println!("{}\t{role}\t{state}", need.topic);
    }
    eprintln!(
        "topics: {} checked, {created} created, {wrong} missing or drifted in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    if wrong > 0 {
        bail!("{wrong} topic(s) do not fit the config (see above)");
    }
    Ok(())
}

/// The config's S3 sinks: the lake's tables.
fn lake_sinks(config: &Config) -> Vec<&sluice::sink::s3::S3SinkConfig> {
    config
        .sinks
        .values()
        .filter_map(|s| match s {
            sluice::sink::SinkConfig::S3(c) => Some(c),
            _ => None,
        })
        .collect()
}
