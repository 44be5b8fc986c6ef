//! How the engine shows things to people: an error with its causes on one line, a commit id
//! cut short. Pure.

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
