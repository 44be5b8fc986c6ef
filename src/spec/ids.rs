//! Newtypes for the identifiers in task files; each checks its own syntax when deserialized, so a
//! bad value is reported at its line and column.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $pattern:literal, $max:literal, $check:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, String> {
                let value = value.into();
                let check: fn(&str) -> bool = $check;
                if value.is_empty() {
                    return Err(format!("{} must not be empty", $what));
                }
                if value.len() > $max {
                    return Err(format!("{} is {} characters long; at most {} are allowed", $what, value.len(), $max));
                }
                if !check(&value) {
                    return Err(format!("{} {:?} must match {}", $what, value, $pattern));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a value read back from a place that only ever holds checked ones (the
            /// database), without checking it again.
            #[allow(dead_code)]
            pub(crate) fn from_checked(value: String) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "minLength": 1, "maxLength": $max })
            }
        }
    };
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

string_id!(
    /// A task's key: its file name without `.yaml`. Lower case, digits, `-`, `_`, `.`.
    TaskKey,
    "^[a-z0-9][a-z0-9._-]*$",
    100,
    |s| s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')),
    "task key"
);

string_id!(
    /// Who does a task. Tasks with the same addressee run strictly one at a time.
    Addressee,
    "^[A-Za-z0-9][A-Za-z0-9._-]*$",
    200,
    |s| s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.chars().all(is_name_char),
    "addressee"
);

string_id!(
    /// A short label: task kind, epic, agent profile name.
    Label,
    "^[A-Za-z0-9][A-Za-z0-9._-]*$",
    100,
    |s| s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.chars().all(is_name_char),
    "label"
);

string_id!(
    /// A git branch name (without `refs/heads/`).
    BranchName,
    "^[A-Za-z0-9][A-Za-z0-9._/-]*$",
    200,
    |s| s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| is_name_char(c) || c == '/')
        && !s.contains("..")
        && !s.contains("//")
        && !s.ends_with('/')
        && !s.ends_with(".lock")
        && !s.ends_with('.'),
    "branch"
);
