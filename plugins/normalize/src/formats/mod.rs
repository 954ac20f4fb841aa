//! Parsers for records that arrive as text (`body` set, no attributes): each turns the
//! line into attributes and record fields that the field mapping then normalizes.

pub mod access;
pub mod json;
pub mod klog;
pub mod logfmt;
pub mod plain;
pub mod ruby;
pub mod syslog;
pub mod wrappers;

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
    Klog,
    RubyLogger,
    /// Wrappers, counted besides the format of the line inside.
    Cri,
    DockerJson,
    Unparsed,
}

impl Format {
    pub const ALL: [Format; 12] = [
        Format::Attributes,
        Format::JsonBody,
        Format::Logfmt,
        Format::Access,
        Format::Syslog3164,
        Format::Syslog5424,
        Format::Plain,
        Format::Klog,
        Format::RubyLogger,
        Format::Cri,
        Format::DockerJson,
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
            Format::Klog => "format.klog",
            Format::RubyLogger => "format.ruby_logger",
            Format::Cri => "format.cri",
            Format::DockerJson => "format.docker_json",
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
    let second = line.as_bytes().get(1).copied().unwrap_or(b' ');
    // Digits first: rsyslog's file format, `2026-11-25T10:00:00.123456+00:00 host tag: …`.
    let iso_syslog = first.is_ascii_digit() && line.as_bytes().get(10) == Some(&b'T');
    if second.is_ascii_digit() && klog::parse(record) {
        return Format::Klog;
    }
    if second == b',' && ruby::parse(record) {
        return Format::RubyLogger;
    }
    if first == b'<' || first.is_ascii_alphabetic() || iso_syslog {
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
