//! What an SQS message from S3 says: the test event S3 sends when a notification is
//! configured, the objects created, or something else (not an S3 notification).
//!
//! Messages may come straight from S3 or through an SNS topic (its envelope is unwrapped).
//! Object keys in notifications are URL-encoded, spaces as `+`.

use serde::Deserialize;

/// An object a notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// The key, decoded.
    pub key: String,
    /// The ETag S3 reported, without quotes (empty if absent).
    pub etag: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// `s3:TestEvent`: sent once when the notification is configured; nothing to read.
    Test,
    /// The objects created (events other than `ObjectCreated:*` are left out).
    Objects(Vec<ObjectRef>),
    /// Not an S3 notification; why.
    Foreign(String),
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    /// SNS envelope: the S3 notification as a string.
    #[serde(rename = "Type")]
    sns_type: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventSource", default)]
    event_source: String,
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Named,
    object: Object,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    #[serde(rename = "eTag", default)]
    etag: String,
}

/// Read an SQS message body.
pub fn parse(body: &str) -> Notice {
    let parsed: Body = match serde_json::from_str(body) {
        Ok(b) => b,
        Err(e) => return Notice::Foreign(format!("not JSON: {e}")),
    };
    if parsed.sns_type.as_deref() == Some("Notification")
        && let Some(inner) = &parsed.message
    {
        return parse(inner);
    }
    if parsed.event.as_deref() == Some("s3:TestEvent") {
        return Notice::Test;
    }
    let Some(records) = parsed.records else {
        return Notice::Foreign("no `Records` and not `s3:TestEvent`".into());
    };
    let mut objects = Vec::with_capacity(records.len());
    for record in records {
        if record.event_source != "aws:s3" {
            return Notice::Foreign(format!(
                "a record from `{}`, not `aws:s3`",
                record.event_source
            ));
        }
        let Some(s3) = record.s3 else {
            return Notice::Foreign("a record without `s3`".into());
        };
        if !record.event_name.starts_with("ObjectCreated:") {
            tracing::info!(event = %record.event_name, bucket = %s3.bucket.name, "not an object creation; ignored");
            continue;
        }
        let Some(key) = decode_key(&s3.object.key) else {
            return Notice::Foreign(format!(
                "object key `{}` is not URL-encoded UTF-8",
                s3.object.key
            ));
        };
        objects.push(ObjectRef {
            bucket: s3.bucket.name,
            key,
            etag: s3.object.etag.trim_matches('"').to_owned(),
        });
    }
    Notice::Objects(objects)
}

/// A key as S3 notifications write it: form URL-encoding (`+` for a space, `%XX`).
pub fn decode_key(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-05T21:29:52.027Z","eventName":"ObjectCreated:Put","s3":{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{"name":"logs","arn":"arn:aws:s3:::logs"},"object":{"key":"in%2Fa+b%2Bc.ndjson","size":8,"eTag":"4588ff37","sequencer":"0A1B"}}}]}"#;

    #[test]
    fn reads_created_objects_with_decoded_keys() {
        assert_eq!(
            parse(CREATED),
            Notice::Objects(vec![ObjectRef {
                bucket: "logs".into(),
                key: "in/a b+c.ndjson".into(),
                etag: "4588ff37".into(),
            }])
        );
    }

    #[test]
    fn tells_the_test_event_and_foreign_messages() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-05T21:29:52.009Z","Bucket":"logs"}"#;
        assert_eq!(parse(test), Notice::Test);
        assert!(matches!(parse("hello"), Notice::Foreign(_)));
        assert!(matches!(parse(r#"{"order":1}"#), Notice::Foreign(_)));
        let removed = CREATED.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(parse(&removed), Notice::Objects(vec![]));
    }

    #[test]
    fn unwraps_an_sns_envelope() {
        let sns = serde_json::json!({"Type": "Notification", "Message": CREATED}).to_string();
        assert!(matches!(parse(&sns), Notice::Objects(o) if o.len() == 1));
    }

    #[test]
    fn bad_escapes_are_refused() {
        assert_eq!(decode_key("a%2"), None);
        assert_eq!(decode_key("a%zz"), None);
        assert_eq!(decode_key("a%C3%A9").as_deref(), Some("aé"));
    }
}
