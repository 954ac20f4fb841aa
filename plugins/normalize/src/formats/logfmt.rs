//! logfmt: `level=info msg="x y" service=api duration=12ms`.

use sluice_plugin_sdk::{Attribute, Value};

/// Parse a whole line of `key=value` pairs (values bare or double-quoted with `\`
/// escapes). A line only counts as logfmt when every token is a pair and there are at
/// least two, so prose containing one `a=b` stays prose. Values are text: typing them
/// is the normalizer's job (status codes, durations, timestamps).
pub fn parse(line: &str) -> Option<Vec<Attribute>> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, value, tail) = pair(rest)?;
        out.push(Attribute {
            key: key.to_string(),
            value: Value::Str(value),
        });
        rest = tail.trim_start();
    }
    (out.len() >= 2).then_some(out)
}

/// One `key=value` at the start of `s`: key, unescaped value, and what follows.
pub fn pair(s: &str) -> Option<(&str, String, &str)> {
    let eq = s.find(['=', ' ', '"'])?;
    if eq == 0 || s.as_bytes()[eq] != b'=' {
        return None;
    }
    let key = &s[..eq];
    let after = &s[eq + 1..];
    if let Some(quoted) = after.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    let tail = &quoted[i + 1..];
                    // A closing quote must end the token.
                    return (tail.is_empty() || tail.starts_with(' '))
                        .then_some((key, value, tail));
                }
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        None
    } else {
        let end = after.find(' ').unwrap_or(after.len());
        let value = &after[..end];
        if value.contains('"') {
            return None;
        }
        Some((key, value.to_string(), &after[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let a = parse(r#"level=info msg="x \"y\" z" service=api duration=12ms empty="#).unwrap();
        let kv: Vec<(&str, &str)> = a
            .iter()
            .map(|a| (a.key.as_str(), a.value.as_str().unwrap()))
            .collect();
        assert_eq!(
            kv,
            [
                ("level", "info"),
                ("msg", "x \"y\" z"),
                ("service", "api"),
                ("duration", "12ms"),
                ("empty", "")
            ]
        );
    }

    #[test]
    fn rejects_prose_and_broken_quotes() {
        assert!(parse("user=bob logged in").is_none());
        assert!(parse("just=one").is_none());
        assert!(parse(r#"a=1 msg="unterminated"#).is_none());
        assert!(parse("=x a=b").is_none());
    }
}
