//! Secret values and their redaction: every configured secret is replaced wherever text leaves
//! a worker (log lines, results, events, status files), and a commit that would contain one is
//! refused. Pure, apart from reading the environment and a credentials file.

use std::collections::BTreeMap;
use std::path::Path;

/// Environment variables whose values are always secrets.
pub const SECRET_ENV: &[&str] = &[
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "SWARM_GIT_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "SWARM_DATABASE_URL",
    "DATABASE_URL",
];

/// Values shorter than this are not treated as secrets: redacting `1` or `true` everywhere
/// would destroy the text and protect nothing.
const MIN_SECRET_LEN: usize = 8;

/// Whether a variable's name says it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    SECRET_ENV.contains(&n.as_str())
        || [
            "_TOKEN",
            "_KEY",
            "_SECRET",
            "_PASSWORD",
            "_PASS",
            "_CREDENTIALS",
        ]
        .iter()
        .any(|s| n.ends_with(s))
}

/// Replaces known secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, name), longest first so a secret that contains another is replaced whole.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    /// Secrets from `env` (name -> value) whose names look secret, plus every value in `extra`.
    pub fn new<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut r = Self::default();
        for (name, value) in env {
            if looks_secret(name) {
                r.add(name, value);
            }
        }
        r
    }

    /// From the process environment.
    pub fn from_env() -> Self {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::new(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Adds `value` under `name`.
    pub fn add(&mut self, name: &str, value: &str) {
        let value = value.trim();
        if value.len() >= MIN_SECRET_LEN && !self.secrets.iter().any(|(v, _)| v == value) {
            self.secrets.push((value.to_string(), name.to_string()));
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        }
    }

    /// Adds the tokens of a Claude Code credentials file (`~/.claude/.credentials.json`).
    pub fn add_credentials_file(&mut self, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        let mut stack = vec![json];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match v {
                            serde_json::Value::String(s)
                                if k.to_ascii_lowercase().contains("token") =>
                            {
                                self.add("claude credentials", &s)
                            }
                            other => stack.push(other),
                        }
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
    }

    /// Adds the secret-looking values of an environment map (an agent profile's, expanded).
    pub fn add_env(&mut self, env: &BTreeMap<String, String>) {
        for (k, v) in env {
            if looks_secret(k) {
                self.add(k, v);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by `[REDACTED:<name>]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, name) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("[REDACTED:{name}]"));
            }
        }
        out
    }

    /// The name of the first secret found in `bytes`, if any.
    pub fn find_in(&self, bytes: &[u8]) -> Option<&str> {
        self.secrets
            .iter()
            .find(|(value, _)| bytes.windows(value.len()).any(|w| w == value.as_bytes()))
            .map(|(_, name)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_configured_secrets_and_leaves_the_rest() {
        let r = Redactor::new([
            ("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-abcdefgh"),
            ("MY_API_KEY", "key-12345678"),
            ("IS_SANDBOX", "1"),
            ("SHORT_TOKEN", "abc"),
            ("PATH", "/usr/bin:/bin"),
        ]);
        let text = "token sk-ant-oat01-abcdefgh and key-12345678 in /usr/bin, 1 and abc";
        assert_eq!(
            r.redact(text),
            "token [REDACTED:CLAUDE_CODE_OAUTH_TOKEN] and [REDACTED:MY_API_KEY] in /usr/bin, 1 and abc"
        );
        assert_eq!(r.find_in(b"xx key-12345678 yy"), Some("MY_API_KEY"));
        assert_eq!(r.find_in(b"nothing here"), None);
    }

    #[test]
    fn credentials_file_tokens_are_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".credentials.json");
        std::fs::write(&path, r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-access","refreshToken":"sk-ant-ort01-refresh","expiresAt":1}}"#).unwrap();
        let mut r = Redactor::default();
        r.add_credentials_file(&path);
        assert_eq!(
            r.redact("a sk-ant-oat01-access b sk-ant-ort01-refresh"),
            "a [REDACTED:claude credentials] b [REDACTED:claude credentials]"
        );
    }
}
