//! `[sinks.<name>] type = "s3"`: where objects go, how they are cut, and Athena.

use crate::lake::Table;
use crate::route::RouteName;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// The routes written to this sink's table (one, unless `table` is set).
    pub routes: Vec<RouteName>,
    /// The lake table; by default the route's name (`raw`, `cleaned` or `metrics`).
    #[serde(default)]
    pub table: Option<Table>,
    pub bucket: String,
    /// Key prefix of the lake; tables live under `<prefix>/<table>/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// AWS region; by default the environment's (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint (MinIO, a local S3); path-style addressing is used with it.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `parquet` (cleaned, metrics) or `ndjson_gzip` (raw); by default the table's format.
    #[serde(default)]
    pub format: Option<Format>,
    /// An object holds at most this many records.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// An object holds at most about this many bytes (uncompressed estimate).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// An object's records span at most this much event time.
    #[serde(default = "default_max_span")]
    pub max_event_time_span_s: u64,
    /// A source partition that sent nothing for this long has its objects written anyway.
    #[serde(default = "default_idle_flush_ms")]
    pub idle_flush_ms: u64,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB).
    #[serde(default = "default_part_bytes")]
    pub multipart_part_bytes: usize,
    #[serde(default)]
    pub athena: AthenaConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Parquet,
    NdjsonGzip,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AthenaConfig {
    /// The Glue/Athena database the table is declared in.
    pub database: String,
    /// The Athena table name; by default the lake table's name.
    pub table: Option<String>,
    pub workgroup: String,
    /// Where Athena writes query results (`s3://…/`); needed unless the workgroup sets one.
    pub output_location: Option<String>,
    /// Declare partitions by projection (no registration). When false, the sink registers
    /// each new partition with `ALTER TABLE … ADD IF NOT EXISTS PARTITION`.
    pub partition_projection: bool,
    /// First day partition projection covers (`YYYY-MM-DD`).
    pub projection_start: String,
}

impl Default for AthenaConfig {
    fn default() -> Self {
        AthenaConfig {
            database: "sluice".into(),
            table: None,
            workgroup: "primary".into(),
            output_location: None,
            partition_projection: true,
            projection_start: "2020-01-01".into(),
        }
    }
}

fn default_prefix() -> String {
    "sluice".into()
}
fn default_max_records() -> usize {
    100_000
}
fn default_max_bytes() -> usize {
    64 << 20
}
fn default_max_span() -> u64 {
    3_600
}
fn default_idle_flush_ms() -> u64 {
    60_000
}
fn default_part_bytes() -> usize {
    8 << 20
}

const MIN_PART_BYTES: usize = 5 << 20;

impl S3SinkConfig {
    /// The table this sink writes.
    pub fn table(&self) -> Table {
        self.table
            .or_else(|| self.routes.first().and_then(Table::for_route))
            .unwrap_or(Table::Cleaned)
    }

    pub fn format(&self) -> Format {
        self.format.unwrap_or(match self.table() {
            Table::Raw => Format::NdjsonGzip,
            Table::Cleaned | Table::Metrics => Format::Parquet,
        })
    }

    /// The Athena table name.
    pub fn athena_table(&self) -> String {
        self.athena
            .table
            .clone()
            .unwrap_or_else(|| self.table().name().to_owned())
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        self.check_table()?;
        self.check_limits()?;
        self.athena.check()
    }

    /// Where it writes: the bucket, and which table in which format its routes make.
    fn check_table(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: &str| Err((key.to_owned(), msg.to_owned()));
        if self.bucket.trim().is_empty() || self.bucket.contains('/') {
            return err(
                "bucket",
                "must name an S3 bucket (just the name, without s3:// or a path; put paths in `prefix`)",
            );
        }
        if self.table.is_none() {
            if self.routes.len() != 1 {
                return err(
                    "routes",
                    "an S3 sink writes one table: give exactly one route, or set `table` to put several routes in one table",
                );
            }
            if Table::for_route(&self.routes[0]).is_none() {
                return err(
                    "table",
                    "the route is not `raw`, `cleaned` or `metrics`; set `table` to one of those",
                );
            }
        }
        let table = self.table();
        if self.routes.contains(&RouteName::Dlq) {
            return err(
                "routes",
                "dead letters cannot go to the lake; send `dlq` to a Kafka or file sink",
            );
        }
        if (table == Table::Raw) != self.routes.iter().all(|r| *r == RouteName::Raw) {
            return err(
                "table",
                "the `raw` route, and only it, goes to the `raw` table (its events are the original messages, not records)",
            );
        }
        match (table, self.format()) {
            (Table::Raw, Format::NdjsonGzip)
            | (Table::Cleaned | Table::Metrics, Format::Parquet) => {}
            (Table::Raw, _) => return err("format", "the raw table is written as \"ndjson_gzip\""),
            _ => {
                return err(
                    "format",
                    "the cleaned and metrics tables are written as \"parquet\"",
                );
            }
        }
        Ok(())
    }

    /// How objects are cut and sent.
    fn check_limits(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: &str| Err((key.to_owned(), msg.to_owned()));
        if self.max_records == 0 {
            return err("max_records", "must be at least 1");
        }
        if self.max_bytes < 1024 {
            return err("max_bytes", "must be at least 1024");
        }
        if self.max_event_time_span_s == 0 {
            return err("max_event_time_span_s", "must be at least 1");
        }
        if self.idle_flush_ms == 0 {
            return err("idle_flush_ms", "must be at least 1");
        }
        if self.multipart_part_bytes < MIN_PART_BYTES {
            return err(
                "multipart_part_bytes",
                "must be at least 5242880 (S3's smallest part is 5 MiB)",
            );
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return err("endpoint", "must be a URL such as http://127.0.0.1:4566");
        }
        Ok(())
    }
}

impl AthenaConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: &str| Err((key.to_owned(), msg.to_owned()));
        if !self.partition_projection && self.database.trim().is_empty() {
            return err(
                "athena.database",
                "must name a database to register partitions in",
            );
        }
        if let Some(loc) = &self.output_location
            && !loc.starts_with("s3://")
        {
            return err("athena.output_location", "must be an s3:// URL");
        }
        let start = &self.projection_start;
        let valid_date = start.len() == 10
            && start.chars().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == '-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !valid_date {
            return err(
                "athena.projection_start",
                "must be a date such as 2020-01-01",
            );
        }
        Ok(())
    }
}
