//! Errors of the scenario model. Every problem found in a file is a [`Diagnostic`] that names
//! the file, line and column of the offending key or value and says what to do about it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A position in a scenario file, 1-based line and column (columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in a scenario: `<message> at <file:line:col>; <hint>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<Location>,
    /// What to do about it, when there is something more specific to say than the message.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has one or more problems; all that were found are listed, one per line.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Diagnostic>),
    /// A command-line override (`--repetitions`, `--duration`, `--filter`) cannot be applied.
    #[error("{0}")]
    Override(String),
}

impl ScenarioError {
    /// The problems found in the file (empty for the other variants).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ScenarioError::Invalid(d) => d,
            _ => &[],
        }
    }
}

fn join_lines(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Levenshtein distance between two short strings (keys and values), in characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The candidate nearest to `word`, if it is near enough to be a plausible typo: at most a
/// third of the word's length away (and at least one edit is always allowed).
pub(crate) fn nearest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_ascii_lowercase(), c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("repetiton", "repetitions"), 2);
        assert_eq!(edit_distance("vcpu", "vcpus"), 1);
        assert_eq!(edit_distance("nic", "nic"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn nearest_ignores_far_candidates() {
        let keys = ["repetitions", "warmup_secs", "seed"];
        assert_eq!(nearest("repetiton", keys), Some("repetitions"));
        assert_eq!(nearest("sed", keys), Some("seed"));
        assert_eq!(nearest("colour", keys), None);
    }

    #[test]
    fn diagnostic_reads_message_location_hint() {
        let d = Diagnostic {
            message: "unknown key `repetiton`".into(),
            location: Some(Location {
                file: "scenarios/x.toml".into(),
                line: 4,
                column: 1,
            }),
            hint: Some("did you mean `repetitions`?".into()),
        };
        assert_eq!(
            d.to_string(),
            "unknown key `repetiton` at scenarios/x.toml:4:1; did you mean `repetitions`?"
        );
    }
}
