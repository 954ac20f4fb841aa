//! Athena: the `CREATE EXTERNAL TABLE` statements for what the S3 sinks write, and the
//! registration of new partitions when partition projection is off.

use super::S3SinkConfig;
use crate::lake::layout::{Partition, table_location};
use crate::lake::{Table, columns, raw};
use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use std::fmt::Write;
use std::time::Duration;

/// `CREATE DATABASE` and `CREATE EXTERNAL TABLE` statements for the S3 sinks `sinks`,
/// separated by blank lines, each ending in `;`. What `sluice athena ddl` prints.
pub fn ddl(sinks: &[&S3SinkConfig]) -> String {
    let mut out = String::new();
    for (_, statement) in statements(sinks) {
        out.push_str(&statement);
        out.push('\n');
    }
    out
}

/// The statements of [`ddl`], each with the sink whose Athena settings run it: every
/// database first, then every table.
pub fn statements<'a>(sinks: &[&'a S3SinkConfig]) -> Vec<(&'a S3SinkConfig, String)> {
    let mut out: Vec<(&S3SinkConfig, String)> = Vec::new();
    for sink in sinks {
        let db = &sink.athena.database;
        let create = format!("CREATE DATABASE IF NOT EXISTS `{db}`;\n");
        if !out.iter().any(|(_, s)| *s == create) {
            out.push((sink, create));
        }
    }
    for sink in sinks {
        out.push((sink, create_table(sink)));
    }
    out
}

/// `sluice athena apply`: run [`statements`] through Athena, each with its sink's
/// workgroup and output location, in order; stops at the first that fails. The query ids
/// of those that ran.
pub async fn apply(sinks: &[&S3SinkConfig]) -> Result<Vec<(String, String)>, AthenaError> {
    let mut done = Vec::new();
    for (sink, statement) in statements(sinks) {
        let sdk = super::store::sdk_config(sink).await;
        // Athena takes one statement without its terminating `;`.
        let statement = statement.trim().trim_end_matches(';').to_owned();
        let id = AthenaRunner::new(&sdk, sink).execute(&statement).await?;
        done.push((statement, id));
    }
    Ok(done)
}

/// The `(name, Athena type)` columns of a table, in file order.
pub fn table_columns(table: Table) -> Vec<(&'static str, &'static str)> {
    match table {
        Table::Raw => raw::COLUMNS.to_vec(),
        Table::Cleaned | Table::Metrics => columns::athena_columns(table),
    }
}

/// The partition columns, in key order.
pub const PARTITION_COLUMNS: [&str; 2] = ["dt", "hour"];

/// One sink's `CREATE EXTERNAL TABLE` statement.
pub fn create_table(sink: &S3SinkConfig) -> String {
    let table = sink.table();
    let location = table_location(&sink.bucket, &sink.prefix, table);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{}`.`{}` (",
        sink.athena.database,
        sink.athena_table()
    );
    let cols = table_columns(table);
    for (i, (name, ty)) in cols.iter().enumerate() {
        let comma = if i + 1 < cols.len() { "," } else { "" };
        let _ = writeln!(s, "  `{name}` {ty}{comma}");
    }
    let _ = writeln!(s, ")");
    let _ = writeln!(s, "PARTITIONED BY (`dt` string, `hour` string)");
    match table {
        Table::Raw => {
            let _ = writeln!(s, "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'");
            let _ = writeln!(
                s,
                "STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'\n  OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'"
            );
        }
        Table::Cleaned | Table::Metrics => {
            let _ = writeln!(s, "STORED AS PARQUET");
        }
    }
    let _ = writeln!(s, "LOCATION '{location}'");
    let mut props: Vec<(String, String)> = Vec::new();
    if table != Table::Raw {
        props.push(("parquet.compression".into(), "ZSTD".into()));
    }
    if sink.athena.partition_projection {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        props.extend([
            p("projection.enabled", "true"),
            p("projection.dt.type", "date"),
            p("projection.dt.format", "yyyy-MM-dd"),
            p(
                "projection.dt.range",
                &format!("{},NOW", sink.athena.projection_start),
            ),
            p("projection.dt.interval", "1"),
            p("projection.dt.interval.unit", "DAYS"),
            p("projection.hour.type", "integer"),
            p("projection.hour.range", "0,23"),
            p("projection.hour.digits", "2"),
            p(
                "storage.location.template",
                &format!("{location}dt=${{dt}}/hour=${{hour}}/"),
            ),
        ]);
    }
    if !props.is_empty() {
        let _ = writeln!(s, "TBLPROPERTIES (");
        for (i, (k, v)) in props.iter().enumerate() {
            let comma = if i + 1 < props.len() { "," } else { "" };
            let _ = writeln!(s, "  '{k}'='{v}'{comma}");
        }
        let _ = writeln!(s, ")");
    }
    // The statement ends where the last line does.
    let end = s.trim_end().len();
    s.truncate(end);
    s.push_str(";\n");
    s
}

/// The statement that registers one partition of a sink's table.
pub fn add_partition(sink: &S3SinkConfig, partition: &Partition) -> String {
    let location = table_location(&sink.bucket, &sink.prefix, sink.table());
    format!(
        "ALTER TABLE `{}` ADD IF NOT EXISTS PARTITION (dt='{}', hour='{}') LOCATION '{location}{}/'",
        sink.athena_table(),
        partition.dt(),
        partition.hour(),
        partition.path()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AthenaError {
    #[error(
        "Athena did not accept `{statement}`: {message}. Check athena.database, athena.workgroup and athena.output_location, and that the table exists (sluice athena ddl)."
    )]
    Request { statement: String, message: String },
    #[error("Athena query {id} for `{statement}` ended {state}: {reason}")]
    Failed {
        id: String,
        statement: String,
        state: String,
        reason: String,
    },
}

/// Runs statements through Athena and waits for each to finish.
pub struct AthenaRunner {
    client: aws_sdk_athena::Client,
    database: String,
    workgroup: String,
    output_location: Option<String>,
}

impl AthenaRunner {
    pub fn new(sdk: &aws_config::SdkConfig, sink: &S3SinkConfig) -> AthenaRunner {
        AthenaRunner {
            client: aws_sdk_athena::Client::new(sdk),
            database: sink.athena.database.clone(),
            workgroup: sink.athena.workgroup.clone(),
            output_location: sink.athena.output_location.clone(),
        }
    }

    /// Start `statement`, poll until it is done; `Ok` only if it succeeded.
    pub async fn execute(&self, statement: &str) -> Result<String, AthenaError> {
        let request = |e: &dyn std::fmt::Display| AthenaError::Request {
            statement: statement.to_owned(),
            message: e.to_string(),
        };
        let mut start = self
            .client
            .start_query_execution()
            .query_string(statement)
            .query_execution_context(
                QueryExecutionContext::builder()
                    .database(&self.database)
                    .build(),
            )
            .work_group(&self.workgroup);
        if let Some(output) = &self.output_location {
            start = start.result_configuration(
                ResultConfiguration::builder()
                    .output_location(output)
                    .build(),
            );
        }
        let started = start
            .send()
            .await
            .map_err(|e| request(&aws_sdk_athena::error::DisplayErrorContext(e)))?;
        let id = started.query_execution_id().unwrap_or_default().to_owned();
        let mut delay = Duration::from_millis(100);
        loop {
            let got = self
                .client
                .get_query_execution()
                .query_execution_id(&id)
                .send()
                .await
                .map_err(|e| request(&aws_sdk_athena::error::DisplayErrorContext(e)))?;
            let status = got.query_execution().and_then(|q| q.status());
            match status.and_then(|s| s.state()) {
                Some(QueryExecutionState::Succeeded) => return Ok(id),
                Some(state @ (QueryExecutionState::Failed | QueryExecutionState::Cancelled)) => {
                    return Err(AthenaError::Failed {
                        id,
                        statement: statement.to_owned(),
                        state: state.as_str().to_owned(),
                        reason: status
                            .and_then(|s| s.state_change_reason())
                            .unwrap_or("no reason given")
                            .to_owned(),
                    });
                }
                _ => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(toml_text: &str) -> S3SinkConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn parquet_ddl_lists_the_schema_columns_and_projection() {
        let s = sink("routes = [\"cleaned\"]\nbucket = \"lake\"\nprefix = \"logs/\"");
        let ddl = create_table(&s);
        assert!(ddl.starts_with("CREATE EXTERNAL TABLE IF NOT EXISTS `sluice`.`cleaned` ("));
        assert!(ddl.contains("  `timestamp` timestamp,\n"));
        assert!(ddl.contains("  `attributes` map<string,string>,\n"));
        assert!(ddl.contains("STORED AS PARQUET"));
        assert!(ddl.contains("LOCATION 's3://lake/logs/cleaned/'"));
        assert!(ddl.contains(
            "'storage.location.template'='s3://lake/logs/cleaned/dt=${dt}/hour=${hour}/'"
        ));
        assert!(ddl.trim_end().ends_with(");"));
        let schema = columns::schema(Table::Cleaned);
        for field in schema.fields() {
            assert!(
                ddl.contains(&format!("`{}` ", field.name())),
                "{}",
                field.name()
            );
        }
    }

    #[test]
    fn raw_ddl_uses_the_json_serde_and_registration_when_projection_is_off() {
        let s = sink(
            "routes = [\"raw\"]\nbucket = \"lake\"\n[athena]\npartition_projection = false\ndatabase = \"logs\"",
        );
        let ddl = create_table(&s);
        assert!(ddl.contains("org.openx.data.jsonserde.JsonSerDe"));
        assert!(!ddl.contains("projection"));
        let p = Partition {
            year: 2026,
            month: 11,
            day: 25,
            hour: 7,
        };
        assert_eq!(
            add_partition(&s, &p),
            "ALTER TABLE `raw` ADD IF NOT EXISTS PARTITION (dt='2026-11-25', hour='07') LOCATION 's3://lake/sluice/raw/dt=2026-11-25/hour=07/'"
        );
    }
}
