//! JSON objects to flattened attributes, the same way the host decodes a JSON message:
//! nested objects become dotted keys, arrays become their JSON text.

use serde_json::Value as Json;
use sluice_plugin_sdk::{Attribute, Value};

/// Parse `text` as a JSON object and append its flattened fields; false (and nothing
/// appended) when it is not a JSON object.
pub fn parse_object(text: &str, out: &mut Vec<Attribute>) -> bool {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => {
            let mut key = String::new();
            flatten(map, &mut key, out);
            true
        }
        _ => false,
    }
}

fn flatten(map: serde_json::Map<String, Json>, prefix: &mut String, out: &mut Vec<Attribute>) {
    let base = prefix.len();
    for (k, v) in map {
        if base > 0 {
            prefix.push('.');
        }
        prefix.push_str(&k);
        let value = match v {
            Json::Object(inner) => {
                flatten(inner, prefix, out);
                prefix.truncate(base);
                continue;
            }
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s),
            array @ Json::Array(_) => Value::Str(array.to_string()),
        };
        out.push(Attribute {
            key: prefix.clone(),
            value,
        });
        prefix.truncate(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_like_the_host() {
        let mut out = Vec::new();
        assert!(parse_object(
            r#"{"a":1,"http":{"status":500,"req":{"m":"GET"}},"tags":["x",2],"f":1.5,"n":null}"#,
            &mut out
        ));
        let get = |k: &str| out.iter().find(|a| a.key == k).map(|a| a.value.clone());
        assert_eq!(get("a"), Some(Value::Int(1)));
        assert_eq!(get("http.status"), Some(Value::Int(500)));
        assert_eq!(get("http.req.m"), Some(Value::from("GET")));
        assert_eq!(get("tags"), Some(Value::from(r#"["x",2]"#)));
        assert_eq!(get("f"), Some(Value::Float(1.5)));
        assert_eq!(get("n"), Some(Value::Null));
        assert!(!parse_object("[1,2]", &mut Vec::new()));
        assert!(!parse_object("{broken", &mut Vec::new()));
    }
}
