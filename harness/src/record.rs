//! Parsing the probe's records (`@vmb <kind> key=value ... [free text]`), whichever way they
//! arrived (mailbox or serial console).

use probe_abi::RECORD_PREFIX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub fields: Vec<(String, String)>,
    /// Words that are not `key=value` (log and error text), joined by spaces.
    pub text: String,
}

impl Record {
    /// Parses a line; `None` if it is not a record (plain console output).
    pub fn parse(line: &str) -> Option<Record> {
        let rest = line.trim_end().strip_prefix(RECORD_PREFIX)?;
        let mut words = rest.split_ascii_whitespace();
        let kind = words.next()?.to_string();
        let mut fields = Vec::new();
        let mut text = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v))
                    if !k.is_empty() && text.is_empty() && kind != "log" && kind != "error" =>
                {
                    fields.push((k.to_string(), v.to_string()))
                }
                _ => text.push(w),
            }
        }
        Some(Record {
            kind,
            fields,
            text: text.join(" "),
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_fields_and_text() {
        let r = Record::parse("@vmb result name=pio_exit n=1000 median=61234\r\n").unwrap();
        assert_eq!(r.kind, "result");
        assert_eq!(r.get("name"), Some("pio_exit"));
        assert_eq!(r.get_u64("median"), Some(61234));
        assert_eq!(r.text, "");

        let l = Record::parse("@vmb log hanging on purpose a=b").unwrap();
        assert_eq!(
            (l.kind.as_str(), l.text.as_str()),
            ("log", "hanging on purpose a=b")
        );
        assert!(l.fields.is_empty());
    }

    #[test]
    fn plain_console_lines_are_not_records() {
        assert_eq!(Record::parse("hello"), None);
        assert_eq!(Record::parse("@vmb"), None);
        assert_eq!(Record::parse("@vmb "), None);
    }
}
