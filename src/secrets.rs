//! Secret values and their redaction: every configured secret is replaced wherever text leaves
//! a worker (log lines, results, events, status files), and a commit that would contain one is
//! refused. A value is found as it is and base64-, base64url-, hex- and URL-encoded, also when
//! line breaks split it; private keys (PEM) and GitHub tokens are found by their shape, configured
//! or not. Pure, apart from reading the environment and a credentials file.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use regex::bytes::Regex;
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
/// would destroy the text and protect nothing. The floor holds for every form a value is
/// looked for in: an 8-byte value is at least 10 base64 characters and 16 hex digits, and no
/// form shorter than the floor is looked for, so short values cause no false positives in
/// encoded text either.
const MIN_SECRET_LEN: usize = 8;

/// A line of a multi-line secret (the body of a PEM key) is also looked for on its own when it
/// is all base64 and at least this long: part of a key is still a leak, and 16 characters of a
/// random key do not occur by chance.
const MIN_LINE_LEN: usize = 16;

/// A [`LineRedactor`] holds back at most this much text waiting for the rest of a secret.
const MAX_HELD: usize = 64 * 1024;

/// A private key at least this many base64 characters long is refused in a commit; shorter
/// "keys" are placeholders in documentation (the smallest real one, Ed25519 in PKCS#8, has 64).
const MIN_KEY_MATERIAL: usize = 40;

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

/// Replaces known secret values in text, and finds them in bytes, in every form
/// [`Redactor::add`] describes; private keys and GitHub tokens too, configured or not.
#[derive(Clone, Default)]
pub struct Redactor {
    /// (name, value), in the order added.
    secrets: Vec<(String, String)>,
    /// Looks for every form of every value; `None` while there is no value.
    matcher: Option<Matcher>,
}

/// Names only: a redactor never prints what it protects.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.secrets.iter().map(|(name, _)| name))
            .finish()
    }
}

#[derive(Clone)]
struct Matcher {
    /// Every form of every value (needles), leftmost-longest. `None` when it could not be
    /// built: then everything counts as a secret (see [`Redactor::add`]).
    automaton: Option<AhoCorasick>,
    /// For each needle, the index of its secret.
    owner: Vec<usize>,
    /// The needles, sorted: whether a text ends in the beginning of one.
    sorted: Vec<Vec<u8>>,
    longest: usize,
    /// Whether a value has a space (then a `+` in URL-encoded text may stand for one).
    space: bool,
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

    /// Adds `value` under `name`. From then on it is found as it is; base64- and
    /// base64url-encoded, padded or not, wherever it starts in a longer encoded stream;
    /// hex-encoded in lower and upper case; URL-encoded (`%XX`, and `+` for a space); and in
    /// each of these forms also when line breaks (`\n`, `\r\n`, or their `\n` escapes, each
    /// with the indentation after it) split it, as base64 wrapped at any width, a PEM key or a
    /// terminal's wrap do. A multi-line value (a PEM key) is found whole however it is wrapped,
    /// and each of its base64 lines on its own. Values shorter than 8 bytes are ignored.
    pub fn add(&mut self, name: &str, value: &str) {
        let value = value.trim();
        if value.len() < MIN_SECRET_LEN || self.secrets.iter().any(|(_, v)| v == value) {
            return;
        }
        self.secrets.push((name.to_string(), value.to_string()));
        self.matcher = Some(Matcher::build(&self.secrets));
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

    /// Whether no secret value is configured (private keys and GitHub tokens are still found).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret, in any of its forms, replaced by `[REDACTED:<name>]`; a
    /// private key by `[REDACTED:private key]` and a GitHub token by `[REDACTED:GitHub token]`.
    pub fn redact(&self, text: &str) -> String {
        splice(text, &self.hits(text))
    }

    /// The name of the first secret found, in any of its forms, in `bytes`, if any.
    /// Private keys and GitHub tokens are [`find_known`]'s.
    pub fn find_in(&self, bytes: &[u8]) -> Option<&str> {
        let m = self.matcher.as_ref()?;
        let Some(automaton) = &m.automaton else {
            return Some(BROKEN);
        };
        m.views(bytes).into_iter().find_map(|decode| {
            let hit = automaton.find(view_bytes(bytes, decode).as_slice())?;
            Some(self.secrets[m.owner[hit.pattern().as_usize()]].0.as_str())
        })
    }

    /// A redactor for text that arrives line by line.
    pub fn lines(&self) -> LineRedactor {
        LineRedactor {
            redactor: self.clone(),
            held: Vec::new(),
        }
    }

    /// Where `text` has secrets, and the name each is replaced by.
    fn hits(&self, text: &str) -> Vec<(Range<usize>, String)> {
        let bytes = text.as_bytes();
        let mut hits = Vec::new();
        let raw = View::mapped(bytes, Decode::No);
        if let Some(m) = &self.matcher {
            let Some(automaton) = &m.automaton else {
                return vec![(0..bytes.len(), BROKEN.to_string())];
            };
            for decode in m.views(bytes) {
                let decoded;
                let view = if decode == Decode::No {
                    &raw
                } else {
                    decoded = View::mapped(bytes, decode);
                    &decoded
                };
                for hit in automaton.find_iter(view.bytes.as_slice()) {
                    let name = &self.secrets[m.owner[hit.pattern().as_usize()]].0;
                    hits.push((view.original(hit.start()..hit.end()), name.clone()));
                }
            }
        }
        for c in PRIVATE_KEY.captures_iter(bytes) {
            if let Some(block) = c.get(0) {
                hits.push((block.range(), KnownKind::PrivateKey.label().into()));
            }
        }
        for t in GITHUB_TOKEN.find_iter(bytes) {
            hits.push((t.range(), KnownKind::GitHubToken.label().into()));
        }
        for t in GITHUB_TOKEN.find_iter(&raw.bytes) {
            hits.push((
                raw.original(t.range()),
                KnownKind::GitHubToken.label().into(),
            ));
        }
        hits
    }

    /// Where the end of `text` may be the beginning of a secret the text that follows
    /// completes: a proper prefix of a form of a value, or a private key without its end.
    fn open_end(&self, text: &str) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut open = PRIVATE_KEY
            .captures_iter(bytes)
            .last()
            .filter(|c| c.get(3).is_none())
            .and_then(|c| c.get(0))
            .filter(|block| bytes[block.end()..].iter().all(u8::is_ascii_whitespace))
            .map(|block| block.start());
        if let Some(m) = &self.matcher {
            for decode in m.views(bytes) {
                let view = View::mapped(bytes, decode);
                let from = view.bytes.len().saturating_sub(m.longest);
                let prefix_at = (from..view.bytes.len()).find(|&p| {
                    let tail = &view.bytes[p..];
                    let i = m.sorted.partition_point(|n| n.as_slice() < tail);
                    m.sorted.get(i).is_some_and(|n| n.starts_with(tail))
                });
                if let Some(p) = prefix_at {
                    let at = view.spans[p].0;
                    open = Some(open.map_or(at, |o| o.min(at)));
                }
            }
        }
        open
    }
}

/// What [`Redactor::find_in`] names when the matcher could not be built: everything counts.
const BROKEN: &str = "every secret (the secret matcher could not be built)";

impl Matcher {
    fn build(secrets: &[(String, String)]) -> Self {
        let mut seen = HashSet::new();
        let mut needles = Vec::new();
        let mut owner = Vec::new();
        for (i, (_, value)) in secrets.iter().enumerate() {
            for form in forms(value) {
                if seen.insert(form.clone()) {
                    needles.push(form);
                    owner.push(i);
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .inspect_err(|e| {
                tracing::error!("cannot build the secret matcher; everything counts as secret: {e}")
            })
            .ok();
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        let mut sorted = needles;
        sorted.sort();
        Self {
            automaton,
            owner,
            sorted,
            longest,
            space: secrets.iter().any(|(_, v)| v.contains(' ')),
        }
    }

    /// The views of `text` to search: as it is, and URL-decoded when that may differ.
    fn views(&self, text: &[u8]) -> Vec<Decode> {
        let mut views = vec![Decode::No];
        let percent = text.contains(&b'%');
        if percent {
            views.push(Decode::Percent);
        }
        if self.space && (percent || text.contains(&b'+')) {
            views.push(Decode::Form);
        }
        views
    }
}

/// The forms of `value` as the matcher's view reads them (see [`Redactor::add`]).
fn forms(value: &str) -> Vec<Vec<u8>> {
    let mut out = vec![view_bytes(value.as_bytes(), Decode::No)];
    // A multi-line value is encoded as it may have been written: with LF or CRLF line ends.
    let raws = if value.contains('\n') {
        let lf = value.replace("\r\n", "\n");
        let crlf = lf.replace('\n', "\r\n");
        vec![lf.into_bytes(), crlf.into_bytes()]
    } else {
        vec![value.as_bytes().to_vec()]
    };
    for raw in &raws {
        // In a longer base64 stream the value starts at a byte offset of 0, 1 or 2 in a group
        // of three: encode it after as many filler bytes and keep the characters that depend
        // on the value alone (the first ones mix in the filler, the last one what follows).
        for filler in 0..3 {
            let mut input = vec![0; filler];
            input.extend_from_slice(raw);
            let stable = [0, 2, 3][filler]..input.len() * 8 / 6;
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let encoded = engine.encode(&input);
                out.push(encoded.as_bytes()[stable.clone()].to_vec());
            }
        }
        out.push(hex::encode(raw).into_bytes());
        out.push(hex::encode_upper(raw).into_bytes());
    }
    if value.contains('\n') {
        out.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= MIN_LINE_LEN && l.bytes().all(is_base64))
                .map(|l| l.as_bytes().to_vec()),
        );
    }
    out.retain(|f| f.len() >= MIN_SECRET_LEN);
    out
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
}

/// How a view decodes URL encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Not at all.
    No,
    /// `%XX` is the byte it encodes (a URL's path or userinfo).
    Percent,
    /// `%XX` and `+` for a space (a query string, a form).
    Form,
}

/// Calls `emit(byte, original range)` for each byte of `text` as the matcher sees it: line
/// breaks (`\n`, `\r`, and the two-character escapes `\n` and `\r` of JSON and most string
/// literals) are dropped with the spaces and tabs that follow them, so text wrapped at any
/// column reads as one run; URL encoding is decoded as `decode` says.
fn view(text: &[u8], decode: Decode, mut emit: impl FnMut(u8, usize, usize)) {
    let mut i = 0;
    let mut after_break = false;
    while i < text.len() {
        let (byte, len) = match text[i] {
            b'%' if decode != Decode::No => match (
                text.get(i + 1).and_then(hex_digit),
                text.get(i + 2).and_then(hex_digit),
            ) {
                (Some(high), Some(low)) => (high << 4 | low, 3),
                _ => (b'%', 1),
            },
            b'+' if decode == Decode::Form => (b' ', 1),
            b'\\' if matches!(text.get(i + 1), Some(b'n' | b'r')) => (b'\n', 2),
            b => (b, 1),
        };
        let start = i;
        i += len;
        match byte {
            b'\n' | b'\r' => after_break = true,
            b' ' | b'\t' if after_break => {}
            _ => {
                after_break = false;
                emit(byte, start, i);
            }
        }
    }
}

fn hex_digit(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

fn view_bytes(text: &[u8], decode: Decode) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    view(text, decode, |b, _, _| out.push(b));
    out
}

/// A view of a text with, for each of its bytes, the range of the text it came from.
struct View {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl View {
    fn mapped(text: &[u8], decode: Decode) -> Self {
        let mut bytes = Vec::with_capacity(text.len());
        let mut spans = Vec::with_capacity(text.len());
        view(text, decode, |b, start, end| {
            bytes.push(b);
            spans.push((start, end));
        });
        Self { bytes, spans }
    }

    /// The range of the text a non-empty range of the view came from.
    fn original(&self, r: Range<usize>) -> Range<usize> {
        self.spans[r.start].0..self.spans[r.end - 1].1
    }
}

/// `text` with each range of `hits` (overlapping ones merged) replaced by
/// `[REDACTED:<name>]`, the name of the one that starts first.
fn splice(text: &str, hits: &[(Range<usize>, String)]) -> String {
    if hits.is_empty() {
        return text.to_string();
    }
    let mut hits: Vec<&(Range<usize>, String)> = hits.iter().collect();
    hits.sort_by_key(|(r, _)| (r.start, Reverse(r.end)));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    let mut i = 0;
    while i < hits.len() {
        let (range, name) = hits[i];
        let mut end = range.end.min(bytes.len());
        i += 1;
        while i < hits.len() && hits[i].0.start < end {
            end = end.max(hits[i].0.end.min(bytes.len()));
            i += 1;
        }
        out.extend_from_slice(&bytes[at..range.start.max(at)]);
        out.extend_from_slice(format!("[REDACTED:{name}]").as_bytes());
        at = at.max(end);
    }
    out.extend_from_slice(&bytes[at..]);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Redacts a text that arrives line by line (an agent's output), holding back the last lines
/// while they may begin a secret the next lines complete: a value split over lines, or a
/// private key, is replaced whole. At most 64 KiB are held; [`LineRedactor::finish`] gives
/// the rest.
pub struct LineRedactor {
    redactor: Redactor,
    /// Lines not given out yet, as they came.
    held: Vec<String>,
}

impl LineRedactor {
    /// Takes the next line; gives the lines (redacted) that can go out now, possibly none.
    pub fn push(&mut self, line: &str) -> Vec<String> {
        self.held.push(line.to_string());
        let text = self.held.join("\n");
        let hits = self.redactor.hits(&text);
        let open = match self.redactor.open_end(&text) {
            Some(open) if text.len() <= MAX_HELD => open,
            _ => return self.finish_with(&text, &hits),
        };
        // Lines go out up to the one where the open end starts, and a secret found whole
        // stays on the same side as its beginning.
        let line_start = |at: usize| text[..at].rfind('\n').map_or(0, |n| n + 1);
        let mut cut = line_start(open);
        while let Some((r, _)) = hits.iter().find(|(r, _)| r.start < cut && r.end > cut) {
            cut = line_start(r.start);
        }
        if cut == 0 {
            return Vec::new();
        }
        let out: Vec<(Range<usize>, String)> =
            hits.into_iter().filter(|(r, _)| r.end <= cut).collect();
        let given = splice(&text[..cut - 1], &out);
        self.held = text[cut..].split('\n').map(str::to_string).collect();
        given.split('\n').map(str::to_string).collect()
    }

    /// The lines still held, redacted.
    pub fn finish(&mut self) -> Vec<String> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let text = self.held.join("\n");
        let hits = self.redactor.hits(&text);
        self.finish_with(&text, &hits)
    }

    fn finish_with(&mut self, text: &str, hits: &[(Range<usize>, String)]) -> Vec<String> {
        self.held.clear();
        splice(text, hits).split('\n').map(str::to_string).collect()
    }
}

/// A credential recognised by its shape, configured or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownKind {
    /// A PEM private key block (`-----BEGIN ... PRIVATE KEY-----`: PKCS#8, RSA, EC, DSA,
    /// OPENSSH, ENCRYPTED, PGP).
    PrivateKey,
    /// A GitHub token, by its prefix.
    GitHubToken,
}

impl KnownKind {
    /// The name it is redacted as.
    pub fn label(self) -> &'static str {
        match self {
            Self::PrivateKey => "private key",
            Self::GitHubToken => "GitHub token",
        }
    }

    /// What it is, in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PrivateKey => "a private key (PEM block)",
            Self::GitHubToken => "a GitHub token",
        }
    }
}

/// A credential found by [`find_known`], with the text it was found as (line breaks dropped
/// for a token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Known {
    pub kind: KnownKind,
    pub text: Vec<u8>,
}

/// A PEM private key block: the BEGIN line, lines of base64 or `Name: value` headers (as
/// encrypted PEM has), each after a line break (real or a `\n` escape, as in a JSON credentials
/// file), and the END line. Group 3 is the END line, which redaction does not need (a key cut
/// short is still redacted) but a refusal does.
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    let label = r"(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?";
    let brk = r"(?:[ \t]*(?:\r?\n|\\r\\n|\\n)[ \t]*)+";
    // A header first: the first alternative that lets the whole match is taken.
    let line = r"(?:[A-Za-z][A-Za-z-]*: [^\r\n\\]*|[A-Za-z0-9+/=]+)";
    Regex::new(&format!(
        r"-----BEGIN ({label})-----((?:{brk}{line})*)(?:{brk}(-----END {label}-----))?"
    ))
    .expect("the private key pattern compiles")
});

/// GitHub tokens by their documented prefixes: `ghp_` (personal access token), `gho_` (OAuth),
/// `ghu_` (app user-to-server), `ghs_` (app server-to-server, installation), `ghr_` (refresh),
/// followed by `[A-Za-z0-9_]`, 36 characters today and up to 255 in all as GitHub asks
/// integrators to allow for
/// (https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/,
/// https://github.blog/changelog/2021-03-31-authentication-token-format-updates-are-generally-available/);
/// and fine-grained personal access tokens, `github_pat_` followed by 82 characters of the
/// same set (22, `_`, 59).
static GITHUB_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9_]{36,251}|github_pat_[A-Za-z0-9_]{82,244})\b")
        .expect("the GitHub token pattern compiles")
});

/// The private keys and GitHub tokens in `bytes`, configured or not. A private key counts when
/// its block is whole (BEGIN, key material, END) and holds at least 40 characters of key
/// material, so a placeholder in documentation does not; a token also when line breaks split
/// it.
pub fn find_known(bytes: &[u8]) -> Vec<Known> {
    let mut found = Vec::new();
    for c in PRIVATE_KEY.captures_iter(bytes) {
        let (Some(block), Some(body), Some(_end)) = (c.get(0), c.get(2), c.get(3)) else {
            continue;
        };
        if key_material(body.as_bytes()) >= MIN_KEY_MATERIAL {
            found.push(Known {
                kind: KnownKind::PrivateKey,
                text: block.as_bytes().to_vec(),
            });
        }
    }
    let mut tokens = HashSet::new();
    for haystack in [bytes, view_bytes(bytes, Decode::No).as_slice()] {
        for t in GITHUB_TOKEN.find_iter(haystack) {
            if tokens.insert(t.as_bytes().to_vec()) {
                found.push(Known {
                    kind: KnownKind::GitHubToken,
                    text: t.as_bytes().to_vec(),
                });
            }
        }
    }
    found
}

/// How many base64 characters the body of a PEM block has, header lines (`Name: value`) aside.
fn key_material(body: &[u8]) -> usize {
    let mut count = 0;
    let mut header = false;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\n' | b'\r' => header = false,
            b'\\' if matches!(body.get(i + 1), Some(b'n' | b'r')) => {
                header = false;
                i += 1;
            }
            b':' => header = true,
            b if !header && (b.is_ascii_alphanumeric() || b == b'+' || b == b'/') => count += 1,
            _ => {}
        }
        i += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use sha2::Digest;

    /// A secret with characters every encoding changes: `+`, `/`, space, `&`, `=`, `@`, `%`.
    const VALUE: &str = "s3cr3t/Value+with spaces&more=1@host%";

    fn redactor() -> Redactor {
        Redactor::new([("DEPLOY_TOKEN", VALUE)])
    }

    /// Asserts that `text` (which holds `form`, a form of [`VALUE`]) is refused and redacted
    /// so that `form` is gone.
    #[track_caller]
    fn found(r: &Redactor, text: &str, form: &str, what: &str) {
        assert!(
            text.contains(form) || form.is_empty(),
            "{what}: the fixture holds the form"
        );
        assert_eq!(
            r.find_in(text.as_bytes()),
            Some("DEPLOY_TOKEN"),
            "{what}: found"
        );
        let red = r.redact(text);
        assert!(red.contains("[REDACTED:DEPLOY_TOKEN]"), "{what}: {red}");
        assert!(!red.contains(form), "{what}: the form is gone: {red}");
        assert!(
            red.starts_with("before "),
            "{what}: the text around stays: {red}"
        );
        assert!(
            red.ends_with(" after"),
            "{what}: the text around stays: {red}"
        );
    }

    /// Pseudo-random bytes, the same each run.
    fn random(seed: &str, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut block = sha2::Sha256::digest(seed.as_bytes()).to_vec();
        while out.len() < len {
            out.extend_from_slice(&block);
            block = sha2::Sha256::digest(&block).to_vec();
        }
        out.truncate(len);
        out
    }

    /// A PEM block of `kind` (e.g. "RSA ") with `headers`, its key material wrapped at 64.
    fn pem(kind: &str, headers: &str, material: usize, eol: &str) -> String {
        let body = STANDARD.encode(random(kind, material));
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let marker =
            |side: &str| format!("-----{side} {kind}{}-----", ["PRIVATE", "KEY"].join(" "));
        format!(
            "{}{eol}{headers}{}{eol}{}",
            marker("BEGIN"),
            lines.join(eol),
            marker("END")
        )
    }

    fn token(prefix: &str, len: usize) -> String {
        let chars = STANDARD
            .encode(random(prefix, len))
            .replace(['+', '/'], "x");
        format!("{prefix}{}", &chars[..len])
    }

    #[test]
    fn base64_in_both_alphabets_padded_or_not_at_every_offset() {
        let r = redactor();
        for (alphabet, engine) in [("standard", &STANDARD), ("url-safe", &URL_SAFE)] {
            // Alone, padded and unpadded.
            let padded = engine.encode(VALUE);
            found(&r, &format!("before {padded} after"), &padded, alphabet);
            let bare = padded.trim_end_matches('=');
            found(&r, &format!("before {bare} after"), bare, alphabet);
            // Inside a longer stream, starting at each byte offset of a group of three.
            for filler in 0..3 {
                let mut input = b"prefix:".to_vec();
                input.extend(std::iter::repeat_n(b'#', filler));
                input.extend_from_slice(VALUE.as_bytes());
                input.extend_from_slice(b":suffix");
                let stream = engine.encode(&input);
                // The characters only the value determines: the middle of the stream.
                let core = &stream[12..stream.len() - 12];
                found(
                    &r,
                    &format!("before {stream} after"),
                    core,
                    &format!("{alphabet} at offset {filler}"),
                );
            }
        }
        // `echo $SECRET | base64`: a trailing newline in the input.
        let echoed = STANDARD.encode(format!("{VALUE}\n"));
        found(
            &r,
            &format!("before {echoed} after"),
            &echoed[..40],
            "echo | base64",
        );
    }

    #[test]
    fn hex_in_lower_and_upper_case() {
        let r = redactor();
        let lower = hex::encode(VALUE);
        found(&r, &format!("before {lower} after"), &lower, "lower hex");
        let upper = hex::encode_upper(VALUE);
        found(&r, &format!("before 0x{upper} after"), &upper, "upper hex");
    }

    #[test]
    fn url_encoded_with_either_case_and_plus_for_space() {
        let r = redactor();
        let upper = "s3cr3t%2FValue%2Bwith%20spaces%26more%3D1%40host%25";
        found(
            &r,
            &format!("before https://x.test/?t={upper} after"),
            upper,
            "%XX",
        );
        let lower = upper
            .replace("%2F", "%2f")
            .replace("%2B", "%2b")
            .replace("%3D", "%3d");
        found(&r, &format!("before {lower} after"), &lower, "%xx");
        let form = upper.replace("%20", "+");
        found(
            &r,
            &format!("before q={form}&x=1 after"),
            &form,
            "+ for space",
        );
        // Only some characters encoded, as a URL's userinfo does.
        let partial = "s3cr3t%2FValue+with%20spaces&more=1%40host%25";
        found(
            &r,
            &format!("before {partial} after"),
            partial,
            "partly encoded",
        );
    }

    #[test]
    fn across_line_breaks_indentation_and_escapes() {
        let r = redactor();
        let (a, b) = VALUE.split_at(11);
        for (what, text) in [
            ("LF", format!("before {a}\n{b} after")),
            ("CRLF", format!("before {a}\r\n{b} after")),
            ("indented", format!("before {a}\n        {b} after")),
            ("JSON escape", format!("before {a}\\n{b} after")),
            (
                "three lines",
                format!(
                    "before {}\n{}\n{} after",
                    &VALUE[..5],
                    &VALUE[5..20],
                    &VALUE[20..]
                ),
            ),
        ] {
            assert_eq!(r.find_in(text.as_bytes()), Some("DEPLOY_TOKEN"), "{what}");
            let red = r.redact(&text);
            assert_eq!(red, "before [REDACTED:DEPLOY_TOKEN] after", "{what}");
        }
        // Base64 wrapped at 16 and indented, as in a YAML block.
        let wrapped: Vec<String> = STANDARD
            .encode(VALUE)
            .as_bytes()
            .chunks(16)
            .map(|c| format!("  {}", std::str::from_utf8(c).unwrap()))
            .collect();
        let text = format!("before\n{}\nafter", wrapped.join("\n"));
        assert_eq!(r.find_in(text.as_bytes()), Some("DEPLOY_TOKEN"));
        let red = r.redact(&text);
        assert!(
            red.starts_with("before\n") && red.ends_with("\nafter"),
            "{red}"
        );
        assert!(
            !red.contains(&wrapped[1]) && red.contains("[REDACTED:DEPLOY_TOKEN]"),
            "{red}"
        );
        // Hex split by a terminal's wrap.
        let hex = hex::encode(VALUE);
        let text = format!("before {}\n{} after", &hex[..30], &hex[30..]);
        assert_eq!(r.redact(&text), "before [REDACTED:DEPLOY_TOKEN] after");
    }

    #[test]
    fn a_multi_line_key_is_found_whole_rewrapped_and_line_by_line() {
        let key = pem("", "", 1190, "\n");
        let mut r = Redactor::default();
        r.add("SERVICE_KEY", &key);
        // As given, and with CRLF line ends.
        assert_eq!(r.find_in(key.as_bytes()), Some("SERVICE_KEY"));
        assert_eq!(
            r.find_in(key.replace('\n', "\r\n").as_bytes()),
            Some("SERVICE_KEY")
        );
        // Inside a JSON credentials file, its line breaks escaped.
        let json = format!(r#"{{"private_key": "{}\n"}}"#, key.replace('\n', "\\n"));
        assert_eq!(r.find_in(json.as_bytes()), Some("SERVICE_KEY"));
        assert_eq!(
            r.redact(&json),
            r#"{"private_key": "[REDACTED:SERVICE_KEY]\n"}"#
        );
        // Re-wrapped at 76 and indented.
        let flat: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let rewrapped: Vec<&str> = flat
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let text = format!("key:\n    {}\nend", rewrapped.join("\n    "));
        assert_eq!(r.find_in(text.as_bytes()), Some("SERVICE_KEY"));
        // One line of it alone.
        let line = key.lines().nth(3).unwrap();
        assert_eq!(line.len(), 64);
        let text = format!("part: {line} ok");
        assert_eq!(r.find_in(text.as_bytes()), Some("SERVICE_KEY"));
        assert_eq!(r.redact(&text), "part: [REDACTED:SERVICE_KEY] ok");
        // Base64 of the whole key, wrapped.
        let encoded = STANDARD.encode(&key);
        let text: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert_eq!(r.find_in(text.join("\n").as_bytes()), Some("SERVICE_KEY"));
    }

    #[test]
    fn short_values_are_ignored_and_the_floor_makes_no_false_positives() {
        let r = Redactor::new([("SHORT_TOKEN", "abc1234"), ("PIN_PASSWORD", "12345")]);
        assert!(r.is_empty(), "values under 8 bytes are not secrets");
        // At the floor: an 8-byte value in every form, against a long ordinary text (this
        // crate's README and sources), finds nothing that is not the value.
        let corpus = [
            include_str!("../README.md"),
            include_str!("worker/mod.rs"),
            include_str!("config.rs"),
        ]
        .join("\n");
        for value in ["zebra123", "Passw0rd", "00000000", "deadbeef"] {
            if corpus.contains(value) {
                continue;
            }
            let r = Redactor::new([("A_TOKEN", value)]);
            assert_eq!(r.find_in(corpus.as_bytes()), None, "{value}");
        }
    }

    #[test]
    fn private_keys_are_found_by_their_shape() {
        for (kind, headers) in [
            ("", ""),
            ("RSA ", ""),
            ("EC ", ""),
            ("OPENSSH ", ""),
            ("ENCRYPTED ", ""),
            ("DSA ", ""),
            (
                "RSA ",
                "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF\n\n",
            ),
        ] {
            for eol in ["\n", "\r\n", "\\n"] {
                let key = pem(kind, headers, 48, eol);
                let text = format!("config:\n{key}\nmore");
                let found = find_known(text.as_bytes());
                assert_eq!(found.len(), 1, "{kind:?} {eol:?}: {found:?}");
                assert_eq!(found[0].kind, KnownKind::PrivateKey);
                let red = Redactor::default().redact(&text);
                assert_eq!(
                    red, "config:\n[REDACTED:private key]\nmore",
                    "{kind:?} {eol:?}"
                );
            }
        }
        // Placeholders, prose between the markers, a marker alone: not a key to refuse.
        let marker = |side: &str| format!("-----{side} RSA {}-----", ["PRIVATE", "KEY"].join(" "));
        for text in [
            format!("{}\n...\n{}", marker("BEGIN"), marker("END")),
            format!("{}\nMIIEpAIBAAKCAQEA\n{}", marker("BEGIN"), marker("END")),
            format!(
                "{}\npaste the whole key of your deploy user here, then save\n{}",
                marker("BEGIN"),
                marker("END")
            ),
            format!("a key starts with {}", marker("BEGIN")),
        ] {
            assert!(find_known(text.as_bytes()).is_empty(), "{text}");
        }
        // A key cut short is still redacted.
        let key = pem("", "", 600, "\n");
        let cut = &key[..key.len() / 2];
        assert_eq!(Redactor::default().redact(cut), "[REDACTED:private key]");
        assert!(
            find_known(cut.as_bytes()).is_empty(),
            "a block cut short is not refused"
        );
    }

    #[test]
    fn github_tokens_are_found_by_their_prefixes() {
        let r = Redactor::default();
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let t = token(prefix, 36);
            let text = format!("export GH_TOKEN={t}\n");
            let found = find_known(text.as_bytes());
            assert_eq!(found.len(), 1, "{prefix}");
            assert_eq!(
                (found[0].kind, found[0].text.as_slice()),
                (KnownKind::GitHubToken, t.as_bytes())
            );
            assert_eq!(r.redact(&text), "export GH_TOKEN=[REDACTED:GitHub token]\n");
        }
        // Longer tokens, as GitHub says they may become.
        let long = token("ghs_", 120);
        assert_eq!(find_known(long.as_bytes()).len(), 1);
        let fine = format!("{}_{}", token("github_pat_", 22), token("", 59));
        assert_eq!(fine.len(), 93);
        assert_eq!(find_known(format!("pat: {fine}").as_bytes()).len(), 1);
        assert_eq!(
            r.redact(&format!("pat: {fine}")),
            "pat: [REDACTED:GitHub token]"
        );
        // Split by a terminal's wrap.
        let t = token("ghp_", 36);
        let text = format!("token: {}\n{}\n", &t[..20], &t[20..]);
        assert_eq!(find_known(text.as_bytes()).len(), 1);
        assert_eq!(r.redact(&text), "token: [REDACTED:GitHub token]\n");
        // Too short, a wrong prefix, or inside a longer word: not a token.
        for text in [
            token("ghp_", 20),
            token("ghx_", 36),
            format!("x{}", token("ghp_", 36)),
            "the ghp_ prefix".to_string(),
        ] {
            assert!(find_known(text.as_bytes()).is_empty(), "{text}");
        }
    }

    #[test]
    fn a_stream_of_lines_is_redacted_across_lines() {
        let r = redactor();
        let mut lines = r.lines();
        let (a, b) = VALUE.split_at(15);
        // A line that cannot begin a secret goes out at once (no form of it starts with ".").
        assert_eq!(lines.push("starting."), vec!["starting."]);
        // The first half of the value waits for the next line.
        assert!(lines.push(&format!("leak {a}")).is_empty());
        assert_eq!(
            lines.push(&format!("{b} done.")),
            vec!["leak [REDACTED:DEPLOY_TOKEN] done."]
        );
        // Base64 wrapped over several lines.
        let encoded = STANDARD.encode(VALUE);
        let mut out = Vec::new();
        for chunk in encoded.as_bytes().chunks(10) {
            out.extend(lines.push(std::str::from_utf8(chunk).unwrap()));
        }
        out.extend(lines.push("end"));
        out.extend(lines.finish());
        let text = out.join("\n");
        assert!(
            text.contains("[REDACTED:DEPLOY_TOKEN]") && text.ends_with("end"),
            "{text}"
        );
        assert!(!text.contains(&encoded[10..20]), "{text}");
        // A private key, line by line.
        let key = pem("OPENSSH ", "", 300, "\n");
        let mut out = Vec::new();
        for line in key.lines() {
            out.extend(lines.push(line));
        }
        out.extend(lines.push("after the key."));
        out.extend(lines.finish());
        assert_eq!(out, vec!["[REDACTED:private key]", "after the key."]);
        // What is held at the end comes out with finish.
        assert!(lines.push(&format!("half {a}")).is_empty());
        assert_eq!(lines.finish(), vec![format!("half {a}")]);
    }

    #[test]
    fn debug_shows_names_not_values() {
        let shown = format!("{:?}", redactor());
        assert!(
            shown.contains("DEPLOY_TOKEN") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

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
