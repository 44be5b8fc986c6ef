//! Strict, bounded YAML parsing for files read from repositories: unknown fields, duplicate keys,
//! oversized files, deep nesting and alias bombs are errors with a line and column.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{Budget, DefaultMessageFormatter, MessageFormatter, Options};

/// Largest file we parse. Task files are prompts, not data dumps.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// A problem in one file, at a 1-based line and column (1:1 when it concerns the whole file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SpecError {
    pub fn whole_file(message: impl Into<String>) -> Self {
        Self {
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for SpecError {}

/// Deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 32;
/// Most values (scalars, sequences, mappings), counting each time an alias repeats one.
pub const MAX_NODES: usize = 20_000;
/// Most aliases (`*name`) and anchors (`&name`).
pub const MAX_ALIASES: usize = 100;

fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_events = 100_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    serde_saphyr::options! {
        budget: Some(budget),
    }
}

/// Parses one YAML document into `T`, strictly and within the budget.
pub fn from_yaml<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SpecError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SpecError::whole_file(format!(
            "file is {} bytes; the limit is {} bytes",
            bytes.len(),
            MAX_FILE_BYTES
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col(bytes, e.valid_up_to());
        SpecError {
            line,
            column,
            message: "file is not valid UTF-8".into(),
        }
    })?;
    if text.trim().is_empty() {
        return Err(SpecError::whole_file("file is empty"));
    }
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line().max(1), l.column().max(1)))
            .unwrap_or((1, 1));
        let message = match innermost(&e) {
            serde_saphyr::Error::Budget { breach, .. } => over_budget(breach),
            _ => DefaultMessageFormatter.format_message(&e).into_owned(),
        };
        SpecError {
            line,
            column,
            message,
        }
    })
}

/// The error itself, without the wrappers that add a snippet or an alias's site.
fn innermost(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = e
    {
        e = error;
    }
    e
}

/// Which limit a hostile file ran into, in words.
fn over_budget(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { .. } => {
            format!("nested deeper than {MAX_DEPTH} levels; that is the limit")
        }
        BudgetBreach::Aliases { .. } => {
            format!("more than {MAX_ALIASES} aliases (`*name`); that is the limit")
        }
        BudgetBreach::Anchors { .. } => {
            format!("more than {MAX_ALIASES} anchors (`&name`); that is the limit")
        }
        BudgetBreach::Nodes { .. } => format!(
            "more than {MAX_NODES} values, counting each one an alias repeats; that is the limit"
        ),
        BudgetBreach::Documents { .. } => "more than one YAML document (`---`)".into(),
        other => format!("too large or too complex for a task file: {other:?}"),
    }
}

fn line_col(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<serde_json::Value, SpecError> {
        from_yaml(bytes)
    }

    #[test]
    fn a_file_of_the_limit_reads_one_byte_more_does_not() {
        let head = "addressee: a\n# ";
        let at_limit = format!("{head}{}\n", "x".repeat(MAX_FILE_BYTES - head.len() - 1));
        assert_eq!(at_limit.len(), 256 * 1024);
        assert!(parse(at_limit.as_bytes()).is_ok());
        let over = format!("{at_limit} ");
        assert_eq!(
            parse(over.as_bytes()).unwrap_err().to_string(),
            "1:1: file is 262145 bytes; the limit is 262144 bytes"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_placed_at_their_line_and_column() {
        for (bytes, line, column) in [
            (&b"\xff"[..], 1, 1),
            (b"addressee: a\nprompt: \xff\n", 2, 9),
            (b"a: b\n\nc: d\nprompt: pq\xfe", 4, 11),
        ] {
            let err = parse(bytes).unwrap_err();
            assert_eq!(
                (err.line, err.column, err.message.as_str()),
                (line, column, "file is not valid UTF-8"),
                "{bytes:?}"
            );
        }
        assert_eq!(
            parse(b" \n\n").unwrap_err().to_string(),
            "1:1: file is empty"
        );
    }
}
