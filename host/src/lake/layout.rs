//! Tables, partitions and object keys:
//! `<prefix>/<table>/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset, 20 digits>.<ext>`.
//!
//! The key names the source partition and the first offset of the records in the object,
//! so writing the same records again (a replay after a crash, a second backfill) replaces
//! the object instead of adding another one.

use crate::route::RouteName;
use crate::time;
use std::fmt;

/// A lake table. The route a sink takes decides it unless the sink names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// The source messages as they arrived (NDJSON, gzip).
    Raw,
    /// The chain's output (Parquet).
    Cleaned,
    /// The metrics plugin's output (Parquet).
    Metrics,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Raw, Table::Cleaned, Table::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Cleaned => "cleaned",
            Table::Metrics => "metrics",
        }
    }

    /// The table a route's records belong in, when the route names one.
    pub fn for_route(route: &RouteName) -> Option<Table> {
        match route {
            RouteName::Raw => Some(Table::Raw),
            RouteName::Cleaned => Some(Table::Cleaned),
            RouteName::Metrics => Some(Table::Metrics),
            _ => None,
        }
    }

    pub fn parse(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Hive-style partition: the UTC day and hour of a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl Partition {
    /// The partition of `ns` (ns since the epoch, UTC).
    pub fn of(ns: i64) -> Partition {
        let (year, month, day, hour, ..) = time::utc_parts(ns);
        Partition {
            year,
            month,
            day,
            hour,
        }
    }

    /// `YYYY-MM-DD`.
    pub fn dt(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `HH`.
    pub fn hour(&self) -> String {
        format!("{:02}", self.hour)
    }

    /// `dt=YYYY-MM-DD/hour=HH`.
    pub fn path(&self) -> String {
        format!("dt={}/hour={}", self.dt(), self.hour())
    }
}

/// Everything an object key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    pub table: Table,
    pub partition: Partition,
    pub topic: String,
    pub source_partition: i32,
    pub first_offset: i64,
}

/// Width of the zero-padded first offset, so keys sort by offset.
const OFFSET_DIGITS: usize = 20;

impl ObjectName {
    /// The file extension objects of `table` carry.
    pub fn extension(table: Table) -> &'static str {
        match table {
            Table::Raw => "ndjson.gz",
            Table::Cleaned | Table::Metrics => "parquet",
        }
    }

    /// The full object key under `prefix` (no leading or trailing `/` needed).
    pub fn key(&self, prefix: &str) -> String {
        format!(
            "{}{}/{}/{}+{}+{:0width$}.{}",
            prefix_path(prefix),
            self.table,
            self.partition.path(),
            self.topic,
            self.source_partition,
            self.first_offset,
            ObjectName::extension(self.table),
            width = OFFSET_DIGITS,
        )
    }

    /// Read a key written by [`ObjectName::key`] (any prefix). `None` if it is not one.
    pub fn parse(key: &str) -> Option<ObjectName> {
        let mut parts = key.rsplit('/');
        let file = parts.next()?;
        let hour = parts.next()?.strip_prefix("hour=")?;
        let dt = parts.next()?.strip_prefix("dt=")?;
        let table = Table::parse(parts.next()?)?;
        let stem = file.strip_suffix(&format!(".{}", ObjectName::extension(table)))?;
        let mut fields = stem.rsplitn(3, '+');
        let first_offset = fields.next()?.parse().ok()?;
        let source_partition = fields.next()?.parse().ok()?;
        let topic = fields.next()?.to_owned();
        let mut date = dt.splitn(3, '-');
        let partition = Partition {
            year: date.next()?.parse().ok()?,
            month: date.next()?.parse().ok()?,
            day: date.next()?.parse().ok()?,
            hour: hour.parse().ok()?,
        };
        Some(ObjectName {
            table,
            partition,
            topic,
            source_partition,
            first_offset,
        })
    }
}

/// `prefix` as a key prefix: empty, or ending in exactly one `/`.
pub fn prefix_path(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

/// The S3 location of a table: `s3://bucket/prefix/table/`.
pub fn table_location(bucket: &str, prefix: &str, table: Table) -> String {
    format!("s3://{bucket}/{}{table}/", prefix_path(prefix))
}

/// Split `s3://bucket/key…` into bucket and key.
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_owned(), key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_offset() {
        let ns = time::days_from_civil(2026, 11, 25) * 86_400_000_000_000 + 7 * 3_600_000_000_000;
        let name = ObjectName {
            table: Table::Cleaned,
            partition: Partition::of(ns),
            topic: "raw-logs+eu".into(),
            source_partition: 3,
            first_offset: 42,
        };
        let key = name.key("/lake/");
        assert_eq!(
            key,
            "lake/cleaned/dt=2026-11-25/hour=07/raw-logs+eu+3+00000000000000000042.parquet"
        );
        assert_eq!(ObjectName::parse(&key), Some(name.clone()));
        let later = ObjectName {
            first_offset: 1000,
            ..name
        };
        assert!(later.key("lake") > key);
        assert_eq!(
            ObjectName::parse("lake/cleaned/dt=x/hour=07/a.parquet"),
            None
        );
    }

    #[test]
    fn s3_urls_split_into_bucket_and_key() {
        assert_eq!(
            parse_s3_url("s3://b/p/raw/dt=2026-01-01/"),
            Some(("b".into(), "p/raw/dt=2026-01-01/".into()))
        );
        assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_s3_url("http://b/x"), None);
    }
}
