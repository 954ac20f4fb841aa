//! The Parquet schema of the `cleaned` and `metrics` tables, and the encoder.
//!
//! One fixed list of columns per table drives both the Parquet files and the Athena DDL,
//! so they cannot disagree. Timestamps are `TIMESTAMP(MICROS, UTC)` (Athena cannot read
//! nanoseconds); files are zstd-compressed. Attributes that have no column of their own go
//! to `attributes`, a `map<string,string>` (text values as they are, others as JSON).

use super::Table;
use crate::{Record, Value, codec};
use arrow_array::builder::{
    Float64Builder, Int32Builder, Int64Builder, MapBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy)]
enum From {
    /// The record's event time.
    Timestamp,
    ObservedTimestamp,
    /// The level text (severity text, else derived from the number).
    Level,
    SeverityNumber,
    Body,
    Text(&'static str),
    Int32(&'static str),
    Int64(&'static str),
    Float(&'static str),
    /// An attribute holding ns since the epoch.
    TimeNs(&'static str),
    /// Every attribute without a column.
    Attributes,
    SourceTopic,
    SourcePartition,
    SourceOffset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timestamp,
    Text,
    Int32,
    Int64,
    Float,
    Map,
}

impl From {
    fn kind(self) -> Kind {
        match self {
            From::Timestamp | From::ObservedTimestamp | From::TimeNs(_) => Kind::Timestamp,
            From::Level | From::Body | From::Text(_) | From::SourceTopic => Kind::Text,
            From::SeverityNumber | From::Int32(_) | From::SourcePartition => Kind::Int32,
            From::Int64(_) | From::SourceOffset => Kind::Int64,
            From::Float(_) => Kind::Float,
            From::Attributes => Kind::Map,
        }
    }

    fn attribute(self) -> Option<&'static str> {
        match self {
            From::Text(k) | From::Int32(k) | From::Int64(k) | From::Float(k) | From::TimeNs(k) => {
                Some(k)
            }
            _ => None,
        }
    }
}

const CLEANED: &[(&str, From)] = &[
    ("timestamp", From::Timestamp),
    ("observed_timestamp", From::ObservedTimestamp),
    ("log_level", From::Level),
    ("severity_number", From::SeverityNumber),
    ("message", From::Body),
    ("service_name", From::Text("service.name")),
    ("host_name", From::Text("host.name")),
    ("trace_id", From::Text("trace.id")),
    ("span_id", From::Text("span.id")),
    ("http_request_method", From::Text("http.request.method")),
    (
        "http_response_status_code",
        From::Int32("http.response.status_code"),
    ),
    ("url_path", From::Text("url.path")),
    ("event_duration", From::Int64("event.duration")),
    ("event_dataset", From::Text("event.dataset")),
    ("attributes", From::Attributes),
    ("source_topic", From::SourceTopic),
    ("source_partition", From::SourcePartition),
    ("source_offset", From::SourceOffset),
];

const METRICS: &[(&str, From)] = &[
    ("timestamp", From::Timestamp),
    ("window_start", From::TimeNs("metric.window.start")),
    ("window_end", From::TimeNs("metric.window.end")),
    ("window_seconds", From::Float("metric.window.seconds")),
    ("service_name", From::Text("service.name")),
    ("count", From::Int64("count")),
    ("error_count", From::Int64("error_count")),
    ("error_rate", From::Float("error_rate")),
    ("throughput_rps", From::Float("throughput_rps")),
    ("latency_count", From::Int64("latency.count")),
    ("p50_ms", From::Float("latency.p50_ms")),
    ("p95_ms", From::Float("latency.p95_ms")),
    ("p99_ms", From::Float("latency.p99_ms")),
    ("min_ms", From::Float("latency.min_ms")),
    ("max_ms", From::Float("latency.max_ms")),
    ("latency_sketch", From::Text("latency.sketch")),
    ("attributes", From::Attributes),
    ("source_topic", From::SourceTopic),
    ("source_partition", From::SourcePartition),
    ("source_offset", From::SourceOffset),
];

/// Attributes that have a column elsewhere in the record (the level is `log_level`).
const ALSO_COLUMNS: &[&str] = &["log.level"];

fn columns(table: Table) -> &'static [(&'static str, From)] {
    match table {
        Table::Metrics => METRICS,
        // Raw is NDJSON; callers never ask for its Parquet columns.
        Table::Cleaned | Table::Raw => CLEANED,
    }
}

/// The Athena columns of a Parquet table, in file order: `(name, type)`.
pub fn athena_columns(table: Table) -> Vec<(&'static str, &'static str)> {
    columns(table)
        .iter()
        .map(|(name, from)| {
            let ty = match from.kind() {
                Kind::Timestamp => "timestamp",
                Kind::Text => "string",
                Kind::Int32 => "int",
                Kind::Int64 => "bigint",
                Kind::Float => "double",
                Kind::Map => "map<string,string>",
            };
            (*name, ty)
        })
        .collect()
}

fn attributes_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// The Arrow schema of a Parquet table.
pub fn schema(table: Table) -> SchemaRef {
    let map_type = attributes_builder().finish().data_type().clone();
    let fields: Vec<Field> = columns(table)
        .iter()
        .map(|(name, from)| {
            let (ty, nullable) = match from.kind() {
                Kind::Timestamp => (
                    DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into())),
                    !matches!(from, From::Timestamp),
                ),
                Kind::Text => (DataType::Utf8, !matches!(from, From::SourceTopic)),
                Kind::Int32 => (DataType::Int32, !matches!(from, From::SourcePartition)),
                Kind::Int64 => (DataType::Int64, !matches!(from, From::SourceOffset)),
                Kind::Float => (DataType::Float64, true),
                Kind::Map => (map_type.clone(), false),
            };
            Field::new(*name, ty, nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot build the Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("the object's columns are already finished; no record can be added")]
    Finished,
}

/// The records' time in the lake: event time, else when the host saw them.
pub fn event_time(record: &Record) -> i64 {
    if record.timestamp > 0 {
        record.timestamp
    } else {
        record.observed_timestamp
    }
}

fn micros(ns: i64) -> i64 {
    ns.div_euclid(1_000)
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 => Some(*f as i64),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `value` as the text of a string column: text as it is, anything else as JSON written
/// into `scratch`; `None` for null.
fn as_text<'a>(value: &'a Value, scratch: &'a mut Vec<u8>) -> Option<&'a str> {
    match value {
        Value::Null => None,
        Value::Str(s) => Some(s),
        other => {
            scratch.clear();
            codec::write_value(scratch, other);
            std::str::from_utf8(scratch).ok()
        }
    }
}

/// One column being filled.
enum Builder {
    Timestamp(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float(Float64Builder),
    // Boxed: a map builder is three times the size of the others.
    Map(Box<MapBuilder<StringBuilder, StringBuilder>>),
}

impl Builder {
    fn new(kind: Kind) -> Builder {
        match kind {
            Kind::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::new()),
            Kind::Text => Builder::Text(StringBuilder::new()),
            Kind::Int32 => Builder::Int32(Int32Builder::new()),
            Kind::Int64 => Builder::Int64(Int64Builder::new()),
            Kind::Float => Builder::Float(Float64Builder::new()),
            Kind::Map => Builder::Map(Box::new(attributes_builder())),
        }
    }

    /// Bytes the builder has allocated (capacity, not length: what it holds in memory).
    fn allocated_bytes(&mut self) -> usize {
        fn text(b: &StringBuilder) -> usize {
            b.values_capacity() + 4 * b.offsets_capacity() + b.validity_capacity()
        }
        match self {
            Builder::Timestamp(b) => 8 * b.capacity() + b.validity_capacity(),
            Builder::Text(b) => text(b),
            Builder::Int32(b) => 4 * b.capacity() + b.validity_capacity(),
            Builder::Int64(b) => 8 * b.capacity() + b.validity_capacity(),
            Builder::Float(b) => 8 * b.capacity() + b.validity_capacity(),
            // The map's own offsets (one i32 per row) are not exposed; its entries are.
            Builder::Map(b) => {
                let (keys, values) = b.entries();
                text(keys) + text(values) + 4 * keys.offsets_slice().len().max(1)
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Map(b) => Arc::new(b.finish()),
        }
    }
}

/// The columns of one Parquet object, filled a record at a time as records arrive: a
/// buffered object holds its values in Arrow's compact form, not as records.
pub struct ColumnsBuilder {
    table: Table,
    columns: Vec<(From, Builder)>,
    /// Attributes that have columns of their own, with the column's index (left out of
    /// the attributes map).
    used: Vec<(&'static str, usize)>,
    /// For values written as JSON text, reused so a record costs no allocation for them.
    scratch: Vec<u8>,
    rows: usize,
}

/// More columns than any table has: a record's column values fit on the stack.
const MAX_COLUMNS: usize = 24;
const _: () = assert!(CLEANED.len() <= MAX_COLUMNS && METRICS.len() <= MAX_COLUMNS);

impl ColumnsBuilder {
    pub fn new(table: Table) -> ColumnsBuilder {
        ColumnsBuilder {
            table,
            columns: columns(table)
                .iter()
                .map(|(_, from)| (*from, Builder::new(from.kind())))
                .collect(),
            used: (columns(table).iter().enumerate())
                .filter_map(|(i, (_, from))| Some((from.attribute()?, i)))
                .collect(),
            scratch: Vec::new(),
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Add `r` as the next row.
    pub fn append(&mut self, r: &Record) {
        let values = self.sort_attributes(r);
        let scratch = &mut self.scratch;
        for (column, (from, builder)) in self.columns.iter_mut().enumerate() {
            let (from, value) = (*from, values[column]);
            match builder {
                Builder::Timestamp(b) => b.append_option(timestamp_value(from, r, value)),
                Builder::Text(b) => match from {
                    From::Level => {
                        let level = codec::level_text(r);
                        b.append_option((!level.is_empty()).then_some(level));
                    }
                    From::Body => b.append_option((!r.body.is_empty()).then_some(&r.body)),
                    From::SourceTopic => b.append_value(&r.origin().topic),
                    _ => b.append_option(value.and_then(|v| as_text(v, scratch))),
                },
                Builder::Int32(b) => match from {
                    From::SeverityNumber => b.append_value(i32::from(r.severity_number)),
                    From::SourcePartition => b.append_value(r.origin().partition),
                    _ => {
                        b.append_option(value.and_then(as_i64).and_then(|v| i32::try_from(v).ok()))
                    }
                },
                Builder::Int64(b) => match from {
                    From::SourceOffset => b.append_value(r.origin().offset),
                    _ => b.append_option(value.and_then(as_i64)),
                },
                Builder::Float(b) => b.append_option(value.and_then(as_f64)),
                // Its entries went in while the attributes were sorted.
                // Keys and values always grow together, so appending cannot fail.
                Builder::Map(b) => {
                    let _ = b.append(true);
                }
            }
        }
        self.rows += 1;
    }

    /// One pass over `r`'s attributes: each value of a column's attribute (the first of
    /// its key, as [`Record::get`] finds it) by column, and every other attribute into the
    /// map's entries for this row.
    fn sort_attributes<'r>(&mut self, r: &'r Record) -> [Option<&'r Value>; MAX_COLUMNS] {
        let mut values = [None; MAX_COLUMNS];
        let mut map = self.columns.iter_mut().find_map(|(_, b)| match b {
            Builder::Map(b) => Some(b),
            _ => None,
        });
        for a in &r.attributes {
            let key = a.key.as_str();
            if let Some(&(_, column)) = self.used.iter().find(|(k, _)| *k == key) {
                values[column].get_or_insert(&a.value);
            } else if let Some(map) = map.as_mut()
                && !ALSO_COLUMNS.contains(&key)
            {
                let (keys, map_values) = map.entries();
                keys.append_value(key);
                map_values.append_option(as_text(&a.value, &mut self.scratch));
            }
        }
        values
    }

    /// Bytes the builders have allocated.
    pub fn allocated_bytes(&mut self) -> usize {
        self.scratch.capacity()
            + self
                .columns
                .iter_mut()
                .map(|(_, b)| b.allocated_bytes())
                .sum::<usize>()
    }

    /// The rows so far as an Arrow batch with the table's schema; the builder starts empty
    /// again.
    pub fn finish(&mut self) -> Result<RecordBatch, EncodeError> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|(_, b)| b.finish()).collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(schema(self.table), arrays)?)
    }
}

/// The value of a timestamp column (`value`: its attribute's, if it has one): the event
/// time is never null (0 when unknown).
fn timestamp_value(from: From, r: &Record, value: Option<&Value>) -> Option<i64> {
    let ns = match from {
        From::Timestamp => Some(event_time(r)),
        From::ObservedTimestamp => Some(r.observed_timestamp),
        _ => value.and_then(as_i64),
    };
    ns.filter(|&n| n > 0).map(micros).or(match from {
        From::Timestamp => Some(0),
        _ => None,
    })
}

/// Records as an Arrow batch with the table's schema.
pub fn to_batch(table: Table, records: &[&Record]) -> Result<RecordBatch, EncodeError> {
    let mut builder = ColumnsBuilder::new(table);
    for r in records {
        builder.append(r);
    }
    builder.finish()
}

/// Records as one zstd Parquet file.
pub fn to_parquet(table: Table, records: &[&Record]) -> Result<Vec<u8>, EncodeError> {
    write_parquet(&to_batch(table, records)?)
}

/// A batch as one zstd Parquet file.
pub fn write_parquet(batch: &RecordBatch) -> Result<Vec<u8>, EncodeError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_created_by("sluice".into())
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}

/// A cheap estimate of a record's uncompressed size, for rotation by bytes.
pub fn estimated_size(record: &Record) -> usize {
    64 + record.body.len()
        + record.severity_text.len()
        + record
            .attributes
            .iter()
            .map(|a| {
                a.key.len()
                    + match &a.value {
                        Value::Str(s) => s.len(),
                        Value::Bytes(b) => b.len(),
                        _ => 8,
                    }
            })
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// The column `name` of `batch`, as the array type it has.
    fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
        (batch.column_by_name(name).unwrap().as_any())
            .downcast_ref::<T>()
            .unwrap()
    }

    fn record(offset: i64) -> Record {
        let mut r = Record::new(Origin {
            topic: "raw-logs".into(),
            partition: 1,
            offset,
        });
        r.timestamp = 1_764_064_800_123_456_789;
        r.observed_timestamp = 1_764_064_801_000_000_000;
        r.severity_number = 17;
        r.severity_text = "error".into();
        r.body = "payment failed".into();
        r.set("service.name", "checkout");
        r.set("http.response.status_code", 502i64);
        r.set("event.duration", 12_500_000i64);
        r.set("labels.region", "eu-west-1");
        r.set("log.level", "error");
        r.set("retry", 2i64);
        r
    }

    #[test]
    fn a_column_takes_the_first_of_a_repeated_attribute_and_the_map_keeps_every_other() {
        let mut r = record(5);
        for (key, value) in [("service.name", "second"), ("labels.region", "us-east-1")] {
            r.attributes.push(crate::Attribute {
                key: key.into(),
                value: value.into(),
            });
        }
        let batch = to_batch(Table::Cleaned, &[&r]).unwrap();
        let service = column::<arrow_array::StringArray>(&batch, "service_name");
        assert_eq!(service.value(0), "checkout");
        let map = column::<arrow_array::MapArray>(&batch, "attributes");
        let entries = map.value(0);
        let text = |i: usize| {
            let column = entries.column(i).as_any();
            let strings = column.downcast_ref::<arrow_array::StringArray>().unwrap();
            strings
                .iter()
                .map(|v| v.unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(text(0), ["labels.region", "retry", "labels.region"]);
        assert_eq!(text(1), ["eu-west-1", "2", "us-east-1"]);
    }

    #[test]
    fn cleaned_records_read_back_with_micros_and_other_attributes_in_the_map() {
        let records = [record(5), record(6)];
        let refs: Vec<&Record> = records.iter().collect();
        let bytes = to_parquet(Table::Cleaned, &refs).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch.schema().fields().len(),
            athena_columns(Table::Cleaned).len()
        );
        let ts = column::<arrow_array::TimestampMicrosecondArray>(batch, "timestamp");
        assert_eq!(ts.value(0), 1_764_064_800_123_456);
        let map = column::<arrow_array::MapArray>(batch, "attributes");
        let entries = map.value(0);
        let keys = entries
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        let keys: Vec<&str> = keys.iter().flatten().collect();
        assert_eq!(keys, vec!["labels.region", "retry"]);
        let offsets = column::<arrow_array::Int64Array>(batch, "source_offset");
        assert_eq!(offsets.values().to_vec(), vec![5, 6]);
    }
}
