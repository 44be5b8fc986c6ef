//! How the engine shows things to people: an error with its causes on one line, a commit id
//! cut short. Pure.

/// An error and its sources on one line. A source whose text is shown already (sqlx and
/// OpenSSL repeat theirs) is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
