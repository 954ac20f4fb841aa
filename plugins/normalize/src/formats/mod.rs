//! Parsers for records that arrive as text (`body` set, no attributes): each turns the
//! line into attributes and record fields that the field mapping then normalizes.

pub mod access;
pub mod json;
pub mod logfmt;
pub mod plain;
pub mod syslog;

use sluice_plugin_sdk::Record;

/// What a record was parsed from; one counter per variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decoded from JSON by the host: attributes already present.
    Attributes,
    JsonBody,
    Logfmt,
    Access,
    Syslog3164,
    Syslog5424,
    Plain,
    Unparsed,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::Attributes,
        Format::JsonBody,
        Format::Logfmt,
        Format::Access,
        Format::Syslog3164,
        Format::Syslog5424,
        Format::Plain,
        Format::Unparsed,
    ];

    /// The counter this format is counted under.
    pub fn counter(self) -> &'static str {
        match self {
            Format::Attributes => "format.attributes",
            Format::JsonBody => "format.json",
            Format::Logfmt => "format.logfmt",
            Format::Access => "format.access",
            Format::Syslog3164 => "format.syslog_rfc3164",
            Format::Syslog5424 => "format.syslog_rfc5424",
            Format::Plain => "format.plain",
            Format::Unparsed => "unparsed",
        }
    }
}

/// Parse the text body of `record` into attributes, trying the formats from the most
/// to the least specific. The body becomes empty (JSON, logfmt: the message field
/// refills it), the message part (syslog, plain) or stays the line (access logs,
/// unparsed lines).
pub fn parse_body(record: &mut Record) -> Format {
    let line = record.body.trim();
    let first = line.as_bytes().first().copied().unwrap_or(b' ');
    if first == b'{' && json::parse_object(line, &mut record.attributes) {
        record.body.clear();
        return Format::JsonBody;
    }
    if first == b'<' || first.is_ascii_alphabetic() {
        match syslog::parse(record) {
            Some(syslog::Kind::Rfc3164) => return Format::Syslog3164,
            Some(syslog::Kind::Rfc5424) => return Format::Syslog5424,
            None => {}
        }
    }
    if access::parse(record) {
        return Format::Access;
    }
    if let Some(mut pairs) = logfmt::parse(&record.body) {
        record.attributes.append(&mut pairs);
        record.body.clear();
        return Format::Logfmt;
    }
    if plain::parse(record) {
        return Format::Plain;
    }
    Format::Unparsed
}
