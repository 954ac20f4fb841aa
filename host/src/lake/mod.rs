//! The S3 data lake: what Sluice writes there and how Athena reads it.
//!
//! - [`layout`]: tables, Hive-style partitions and object keys.
//! - [`raw`]: the NDJSON (gzip) envelope of the `raw` table, written and read back.
//! - [`columns`]: the Parquet schema of `cleaned` and `metrics`, and the encoder.
//! - [`athena`]: the `CREATE EXTERNAL TABLE` statements and partition registration.
//!
//! The sink (`sink::s3`) and the backfill (`backfill`) share these, so what is written,
//! what is declared to Athena and what a backfill reads back cannot drift apart.

pub mod athena;
pub mod columns;
pub mod layout;
pub mod raw;

pub use layout::{ObjectName, Table};
