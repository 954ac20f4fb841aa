//! `python-redact` (plugins/examples/python-redact/app.py) in Rust, rule for rule, with
//! the SDK's packed world and its default config: payment card numbers that pass the Luhn
//! check, e-mail addresses, bearer tokens and `password=`-style values are masked in the
//! body and in every text attribute but `trace.id`, `span.id` and `event.id`. It exists
//! to measure what the same logic costs per record in each language
//! (docs/benchmark.md, "Plugins in other languages").

use regex::{Captures, Regex};
use sluice_plugin_sdk::{
    BatchView, Config, Output, PackedPlugin, PluginError, RecordView, ValueRef, host,
};
use std::borrow::Cow;

const MASK: &str = "[redacted]";
const SKIP: [&str; 3] = ["trace.id", "span.id", "event.id"];

pub struct Redact {
    card: Regex,
    email: Regex,
    bearer: Regex,
    secret: Regex,
    counts: [u64; 3],
}

fn luhn(digits: &[u8]) -> bool {
    let total: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &c)| {
            let d = u32::from(c - b'0');
            match (i % 2 == 1, d > 4) {
                (true, true) => d * 2 - 9,
                (true, false) => d * 2,
                _ => d,
            }
        })
        .sum();
    total.is_multiple_of(10)
}

impl Redact {
    /// `s` with every secret masked; borrowed when nothing matched.
    fn text<'a>(&mut self, s: &'a str) -> Cow<'a, str> {
        let mut s = Cow::Borrowed(s);
        let [cards, emails, secrets] = &mut self.counts;
        if s.bytes().any(|b| b.is_ascii_digit()) {
            let out = self.card.replace_all(&s, |m: &Captures| {
                let digits: Vec<u8> = m[0].bytes().filter(u8::is_ascii_digit).collect();
                if (13..=19).contains(&digits.len()) && luhn(&digits) {
                    *cards += 1;
                    MASK.to_owned()
                } else {
                    m[0].to_owned()
                }
            });
            if let Cow::Owned(o) = out {
                s = Cow::Owned(o);
            }
        }
        if s.contains('@') {
            let out = self.email.replace_all(&s, |_: &Captures| {
                *emails += 1;
                MASK
            });
            if let Cow::Owned(o) = out {
                s = Cow::Owned(o);
            }
        }
        // Bearer keeps its prefix (group 1), a secret its name and separator (1 and 2).
        for (re, kept) in [(&self.bearer, 1), (&self.secret, 2)] {
            if re.is_match(&s) {
                let out = re.replace_all(&s, |c: &Captures| {
                    *secrets += 1;
                    let prefix: String = (1..=kept).map(|i| &c[i]).collect();
                    prefix + MASK
                });
                if let Cow::Owned(o) = out {
                    s = Cow::Owned(o);
                }
            }
        }
        s
    }

    fn record(&mut self, record: &RecordView<'_>, out: &mut Output) {
        let body = self.text(record.body);
        let mut head = record.head();
        head.body = &body;
        let mut texts = Vec::with_capacity(record.attributes.len());
        for a in record.attributes {
            texts.push(match a.value {
                ValueRef::Str(s) if !SKIP.contains(&a.key) => self.text(s),
                _ => Cow::Borrowed(""),
            });
        }
        let mut w = out.record(&head);
        for (a, text) in record.attributes.iter().zip(&texts) {
            match a.value {
                ValueRef::Str(_) if !SKIP.contains(&a.key) => {
                    w.attribute(a.key, ValueRef::Str(text))
                }
                v => w.attribute(a.key, v),
            }
        }
    }
}

impl PackedPlugin for Redact {
    fn init(_config: &Config) -> Result<Self, PluginError> {
        let re = |p: &str| Regex::new(p).map_err(|e| PluginError::new(e.to_string()));
        Ok(Redact {
            card: re(r"\b(?:\d[ -]?){12,18}\d\b")?,
            email: re(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")?,
            bearer: re(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]+=*")?,
            secret: re(
                r#"(?i)\b(password|passwd|secret|token|api_key|apikey)(\s*[=:]\s*)([^\s,;&"']+)"#,
            )?,
            counts: [0; 3],
        })
    }

    fn process(&mut self, batch: &BatchView<'_>, out: &mut Output) -> Result<(), PluginError> {
        for record in batch.iter() {
            self.record(&record, out);
        }
        for (name, n) in ["redacted_cards", "redacted_emails", "redacted_secrets"]
            .into_iter()
            .zip(std::mem::take(&mut self.counts))
        {
            host::counter_add(name, n);
        }
        Ok(())
    }
}

sluice_plugin_sdk::export_plugin!(Redact);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_what_the_python_example_masks() {
        let mut r = Redact::init(&Config::from_json("{}")).unwrap();
        assert_eq!(
            r.text("paid with 4111 1111 1111 1111 by a@b.co"),
            "paid with [redacted] by [redacted]"
        );
        assert_eq!(r.text("order 1234567890123"), "order 1234567890123");
        assert_eq!(
            r.text("Authorization: Bearer abc.def token=xyz"),
            "Authorization: Bearer [redacted] token=[redacted]"
        );
        assert_eq!(r.counts, [1, 1, 2]);
    }
}
