//! Strict, bounded YAML parsing for files read from repositories: unknown fields, duplicate keys,
//! oversized files, deep nesting and alias bombs are errors with a line and column.

use std::fmt;

use serde::de::DeserializeOwned;
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

fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = 32;
    budget.max_nodes = 20_000;
    budget.max_aliases = 100;
    budget.max_anchors = 100;
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
        let message = DefaultMessageFormatter.format_message(&e).into_owned();
        SpecError {
            line,
            column,
            message,
        }
    })
}

fn line_col(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
    (line, column)
}
