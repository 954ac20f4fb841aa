//! The S3 data lake: what Sluice writes there and how Athena reads it.
//!
//! - [`layout`]: tables, Hive-style partitions and object keys.
//! - [`raw`]: the NDJSON (gzip) envelope of the `raw` table, written and read back.
//! - [`columns`]: the Parquet schema of `cleaned` and `metrics`, and the encoder.
//!
//! The sink (`sink::s3`, which also declares its tables to Athena) and the backfill share
//! these, so what is written, what is declared to Athena and what a backfill reads back
//! cannot drift apart. This module knows nothing of either.

pub mod columns;
pub mod layout;
pub mod raw;

pub use layout::{ObjectName, Table};
