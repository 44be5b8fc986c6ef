//! Names derived from a task: the run name that makes launching idempotent. Pure.

use sha2::{Digest, Sha256};

/// The name of a run: DNS-safe, unique per (project, key, generation, attempt), so launching
/// the same run twice finds the first instead of starting a second.
pub fn run_name(project: &str, key: &str, generation: i32, attempt: i32) -> String {
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
    let hash = hex::encode(&Sha256::digest(format!("{project}\0{key}").as_bytes())[..4]);
    base.truncate(40);
    format!("{}-{hash}-g{generation}-a{attempt}", base.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_names_are_stable_dns_safe_and_distinct() {
        let a = super::run_name("Web App", "login.form_2", 1, 1);
        assert_eq!(a, super::run_name("Web App", "login.form_2", 1, 1));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert!(a.len() <= 63, "{a}");
        assert_ne!(a, super::run_name("Web App", "login.form_2", 1, 2));
        assert_ne!(
            super::run_name("a", "b-c", 1, 1),
            super::run_name("a-b", "c", 1, 1)
        );
    }
}
