//! Reading a TOML document with the byte span of every key and value (toml's `DeTable`), and
//! turning spans into `file:line:column` diagnostics. Typed getters here report wrong types
//! and out-of-range values; unknown keys are reported with the nearest known key.

use std::ops::Range;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::error::{nearest, Diagnostic, Location};

pub(crate) type Span = Range<usize>;
pub(crate) type Val<'i> = Spanned<DeValue<'i>>;

/// One scenario file being read: its text, where its lines start, and the problems so far.
/// Getters record a diagnostic and return `None` on bad input, so that one pass finds every
/// problem in the file rather than only the first.
pub(crate) struct Reader<'s> {
    file: String,
    text: &'s str,
    line_starts: Vec<usize>,
    pub diags: Vec<Diagnostic>,
}

impl<'s> Reader<'s> {
    pub fn new(file: &str, text: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file: file.to_string(),
            text,
            line_starts,
            diags: Vec::new(),
        }
    }

    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        // Spans always fall on character boundaries; `get` keeps a bad one from panicking.
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location {
            file: self.file.clone(),
            line: line + 1,
            column,
        }
    }

    pub fn error(&mut self, span: &Span, message: impl Into<String>, hint: Option<String>) {
        let d = Diagnostic {
            message: message.into(),
            location: Some(self.location(span.start)),
            hint,
        };
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }

    /// Parses the document; a syntax error becomes a diagnostic.
    pub fn parse(&mut self) -> Option<Spanned<DeTable<'s>>> {
        match DeTable::parse(self.text) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = format!("invalid TOML: {}", e.message().trim_end());
                self.error(&span, message, None);
                None
            }
        }
    }

    /// Reports every key of `table` not in `known`. `elsewhere` may say where a misplaced key
    /// belongs ("`vcpus` belongs in [vm]"), which beats a spelling suggestion.
    pub fn check_keys(
        &mut self,
        table: &DeTable<'_>,
        known: &[&str],
        elsewhere: impl Fn(&str) -> Option<String>,
    ) {
        for (key, key_span, _) in entries(table) {
            if known.contains(&key) {
                continue;
            }
            let hint = elsewhere(key).or_else(|| {
                nearest(key, known.iter().copied()).map(|k| format!("did you mean `{k}`?"))
            });
            let hint = hint.or_else(|| Some(format!("known keys here: {}", list(known))));
            self.error(&key_span, format!("unknown key `{key}`"), hint);
        }
    }

    pub fn table<'t, 'i>(&mut self, v: &'t Val<'i>, what: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.wrong_type(v, what, "a table", other);
                None
            }
        }
    }

    pub fn array<'t, 'i>(&mut self, v: &'t Val<'i>, what: &str) -> Option<&'t DeArray<'i>> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.wrong_type(v, what, "an array", other);
                None
            }
        }
    }

    pub fn string(&mut self, v: &Val<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.wrong_type(v, what, "a string", other);
                None
            }
        }
    }

    pub fn boolean(&mut self, v: &Val<'_>, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(v, what, "true or false", other);
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn integer(&mut self, v: &Val<'_>, what: &str, min: i64, max: i64) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(v, what, "an integer", v.get_ref());
            return None;
        };
        let parsed = i64::from_str_radix(i.as_str(), i.radix()).ok();
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    &v.span(),
                    format!("`{what}` = {i} is out of range"),
                    Some(format!("use an integer from {min} to {max}")),
                );
                None
            }
        }
    }

    /// A number (integer or float) in `min..=max`, or in `min<..=max` when `min` is excluded.
    pub fn number(&mut self, v: &Val<'_>, what: &str, range: NumRange) -> Option<f64> {
        let x = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            other => {
                self.wrong_type(v, what, "a number", other);
                return None;
            }
        };
        let low_ok = |x: f64| {
            if range.min_exclusive {
                x > range.min
            } else {
                x >= range.min
            }
        };
        match x {
            Some(x) if x.is_finite() && low_ok(x) && x <= range.max => Some(x),
            _ => {
                let (op, min) = if range.min_exclusive {
                    ("above", range.min)
                } else {
                    ("from", range.min)
                };
                self.error(
                    &v.span(),
                    format!("`{what}` = {} is out of range", source_text(v, self.text)),
                    Some(format!("use a number {op} {min} up to {}", range.max)),
                );
                None
            }
        }
    }

    fn wrong_type(&mut self, v: &Val<'_>, what: &str, expected: &str, got: &DeValue<'_>) {
        self.error(
            &v.span(),
            format!("`{what}` must be {expected}, not {}", type_name(got)),
            None,
        );
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct NumRange {
    pub min: f64,
    pub max: f64,
    pub min_exclusive: bool,
}

/// The entries of a table in file order, as `(key, key span, value)`.
pub(crate) fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t str, Span, &'t Val<'i>)> {
    let mut v: Vec<_> = table
        .iter()
        .map(|(k, val)| (k.get_ref().as_ref(), k.span(), val))
        .collect();
    v.sort_by_key(|(_, span, _)| span.start);
    v
}

/// The entry for `key`, with its key span.
pub(crate) fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<(Span, &'t Val<'i>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(k, v)| (k.span(), v))
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// `a`, `b`, `c` for messages.
pub(crate) fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn source_text<'t>(v: &Val<'_>, text: &'t str) -> &'t str {
    text.get(v.span()).unwrap_or("?").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_lines_and_character_columns() {
        let r = Reader::new("f.toml", "a = 1\nbé = 2\n");
        assert_eq!(r.location(0).to_string(), "f.toml:1:1");
        assert_eq!(r.location(6).to_string(), "f.toml:2:1");
        // 'é' is two bytes but one column: the space after it is column 3, not 4.
        assert_eq!(r.location(9).to_string(), "f.toml:2:3");
    }

    #[test]
    fn entries_come_in_file_order() {
        let t = DeTable::parse("zeta = 1\nalpha = 2\nmid = 3\n").unwrap();
        let keys: Vec<_> = entries(t.get_ref())
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(keys, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let mut r = Reader::new("f.toml", "a = 1\nb = = 2\n");
        assert!(r.parse().is_none());
        let msg = r.diags[0].to_string();
        assert!(msg.starts_with("invalid TOML: "), "{msg}");
        assert!(msg.contains(" at f.toml:2:"), "{msg}");
    }
}
