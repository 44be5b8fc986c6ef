//! Names derived from a task: the run name that makes launching idempotent. Pure.

use sha2::{Digest, Sha256};

/// The name of a run: DNS-safe (a Kubernetes Job name: at most 63 characters), unique per
/// (project, key, incarnation, generation, attempt), so launching the same run twice finds the
/// first instead of starting a second, and a task file deleted and added again (a new
/// incarnation) never finds a run of the old one.
pub fn run_name(
    project: &str,
    key: &str,
    incarnation: &str,
    generation: i32,
    attempt: i32,
) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut base = format!("{}-{}", clean(project), clean(key));
    // The hash tells apart names the cleaning and cutting made equal; the incarnation tells
    // apart the lives of one key.
    let hash =
        hex::encode(&Sha256::digest(format!("{project}\0{key}\0{incarnation}").as_bytes())[..5]);
    base.truncate(34);
    format!("{}-{hash}-g{generation}-a{attempt}", base.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::run_name;

    #[test]
    fn run_names_are_stable_dns_safe_and_distinct() {
        let a = run_name("Web App", "login.form_2", "0a1b", 1, 1);
        assert_eq!(a, run_name("Web App", "login.form_2", "0a1b", 1, 1));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert_ne!(a, run_name("Web App", "login.form_2", "0a1b", 1, 2));
        assert_ne!(
            a,
            run_name("Web App", "login.form_2", "ffff", 1, 1),
            "another incarnation"
        );
        assert_ne!(
            run_name("a", "b-c", "i", 1, 1),
            run_name("a-b", "c", "i", 1, 1)
        );
        let long = run_name(&"p".repeat(100), &"k".repeat(100), "i", 99_999, 99_999);
        assert!(long.len() <= 63, "{} characters: {long}", long.len());
    }
}
