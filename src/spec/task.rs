//! The task file, `.ai/tasks/<key>.yaml`: the desired work, as a person, the dashboard or the
//! project manager wrote it.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::ids::{Addressee, BranchName, Label};
use super::yaml::{from_yaml, SpecError};

/// One task, as committed to `.ai/tasks/<key>.yaml`. Unknown fields are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "coding-swarm task file",
    description = "One task: .ai/tasks/<key>.yaml. The key is the file name without .yaml."
)]
pub struct TaskSpec {
    /// Who does the task. Tasks with the same addressee run strictly one at a time, in
    /// priority then creation order; different addressees run in parallel.
    pub addressee: Addressee,
    /// What to do. One shot, no conversation.
    pub prompt: Prompt,
    /// The branch the work happens on. Default: `swarm/<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchName>,
    /// The branch a new task branch starts from. Default: the project's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BranchName>,
    /// A label for the kind of work: epic, plan, implement, review, test, merge, ...
    /// It selects the role prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Label>,
    /// The epic this task belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epic: Option<Label>,
    /// The agent profile from the engine's configuration. Default: the engine's default agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Label>,
    /// How long one run may take, e.g. `45m`, `2h`. Default: the engine's default timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// How many runs an agent failure may use before the result is final. Infrastructure
    /// failures are retried by the engine separately. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<MaxAttempts>,
    /// Higher runs first among the pending tasks of one addressee and across addressees.
    /// Default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Who asked for the task, for the feedback loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Addressee>,
    /// The branches a `merge` task merges: their CI checks are the ones it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merges: Option<MergeBranches>,
    /// Whether the task waits, pending, until the required CI checks of the branches it
    /// merges (else of its own branch) pass. Only for projects on GitHub. A `merge` task always
    /// waits; for other kinds the default is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_checks: Option<bool>,
}

impl TaskSpec {
    /// A stable hash of the spec's meaning (not its formatting): a changed hash is a changed spec.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    }
}

/// The branches a merge task merges: one to 20 branch names, each once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MergeBranches(Vec<BranchName>);

impl JsonSchema for MergeBranches {
    fn schema_name() -> Cow<'static, str> {
        "MergeBranches".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let branch = g.subschema_for::<BranchName>();
        json_schema!({
            "description": "One branch name, or a list of 1 to 20 different ones.",
            "oneOf": [
                branch,
                { "type": "array", "items": branch, "minItems": 1, "maxItems": MergeBranches::MAX, "uniqueItems": true }
            ]
        })
    }
}

impl MergeBranches {
    pub const MAX: usize = 20;

    pub fn new(branches: Vec<BranchName>) -> Result<Self, String> {
        if branches.is_empty() {
            return Err("merges must name at least one branch".into());
        }
        if branches.len() > Self::MAX {
            return Err(format!(
                "merges names {} branches; at most {} are allowed",
                branches.len(),
                Self::MAX
            ));
        }
        for (i, b) in branches.iter().enumerate() {
            if branches[..i].contains(b) {
                return Err(format!("merges names the branch `{b}` twice"));
            }
        }
        Ok(Self(branches))
    }

    pub fn iter(&self) -> impl Iterator<Item = &BranchName> {
        self.0.iter()
    }
}

/// A list of branch names, or one branch name for a list of one.
impl<'de> Deserialize<'de> for MergeBranches {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = Vec<BranchName>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a branch name or a list of branch names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![BranchName::new(v).map_err(E::custom)?])
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<BranchName>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        MergeBranches::new(d.deserialize_any(Names)?).map_err(serde::de::Error::custom)
    }
}

/// Parses and checks a task file's bytes.
pub fn parse_task(bytes: &[u8]) -> Result<TaskSpec, SpecError> {
    from_yaml(bytes)
}

/// A non-empty prompt of bounded size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Prompt(String);

impl Prompt {
    pub const MAX_CHARS: usize = 100_000;

    pub fn new(text: impl Into<String>) -> Result<Self, String> {
        let text = text.into();
        if text.trim().is_empty() {
            return Err("prompt must not be empty".into());
        }
        let chars = text.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(format!(
                "prompt is {chars} characters; at most {} are allowed",
                Self::MAX_CHARS
            ));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Prompt::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Prompt {
    fn schema_name() -> Cow<'static, str> {
        "Prompt".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 1, "maxLength": Prompt::MAX_CHARS, "pattern": "\\S" })
    }
}

/// A run's time limit, written as a duration like `90s`, `45m` or `2h` (1 second to 7 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    pub const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

    pub fn new(d: Duration) -> Result<Self, String> {
        if d < Duration::from_secs(1) || d > Self::MAX {
            return Err(format!(
                "timeout {} is out of range; it must be between 1s and 7days",
                humantime::format_duration(d)
            ));
        }
        Ok(Self(d))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text.trim())
            .map_err(|e| format!("timeout {text:?} is not a duration like 90s, 45m or 2h: {e}"))?;
        Self::new(d)
    }

    pub fn duration(&self) -> Duration {
        self.0
    }
}

impl Serialize for Timeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Timeout::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timeout {
    fn schema_name() -> Cow<'static, str> {
        "Timeout".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as 90s, 45m, 2h or 1h 30m (1 second to 7 days).",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$"
        })
    }
}

macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $min:literal, $max:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name($ty);

        impl $name {
            pub fn new(v: i64) -> Result<Self, String> {
                if !($min..=$max).contains(&v) {
                    return Err(format!("{} {} is out of range {}..={}", $what, v, $min, $max));
                }
                Ok(Self(v as $ty))
            }
            pub fn get(&self) -> $ty {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $name::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "integer", "minimum": $min, "maximum": $max })
            }
        }
    };
}

bounded_int!(
    /// Runs allowed for agent failures, 1 to 20.
    MaxAttempts, u32, 1, 20, "max_attempts"
);
bounded_int!(
    /// Dispatch priority, -1000 to 1000; higher first.
    Priority, i32, -1000, 1000, "priority"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_task() {
        let spec = parse_task(
            b"addressee: worker-login\nprompt: |\n  Do it.\nbranch: swarm/login\nbase: main\nkind: implement\nepic: auth\nagent: claude\ntimeout: 45m\nmax_attempts: 2\npriority: 5\ncreated_by: project-mgr-web\n",
        )
        .unwrap();
        assert_eq!(spec.addressee.as_str(), "worker-login");
        assert_eq!(spec.prompt.as_str(), "Do it.\n");
        assert_eq!(
            spec.timeout.unwrap().duration(),
            Duration::from_secs(45 * 60)
        );
        assert_eq!(spec.max_attempts.unwrap().get(), 2);
        assert_eq!(spec.priority.unwrap().get(), 5);
    }

    #[test]
    fn unknown_field_is_an_error_at_its_line() {
        let err = parse_task(b"addressee: a\nprompt: p\nprority: 3\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("prority"), "{err}");
    }

    #[test]
    fn missing_prompt_names_the_field() {
        let err = parse_task(b"addressee: a\n").unwrap_err();
        assert!(err.message.contains("prompt"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_where_they_are() {
        let err = parse_task(b"addressee: a\nprompt: p\ntimeout: soon\n").unwrap_err();
        assert_eq!(
            (err.line, err.message.contains("timeout")),
            (3, true),
            "{err}"
        );
        let err = parse_task(b"addressee: 'has space'\nprompt: p\n").unwrap_err();
        assert_eq!(err.line, 1, "{err}");
        let err = parse_task(b"addressee: a\nprompt: p\nmax_attempts: 0\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        let err = parse_task(b"addressee: a\nprompt: '   '\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let err = parse_task(b"addressee: a\nprompt: p\nbranch: 'a..b'\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }

    #[test]
    fn merges_names_one_to_twenty_branches_each_once() {
        let spec =
            parse_task(b"addressee: a\nprompt: p\nkind: merge\nmerges: [swarm/a, swarm/b]\nrequires_checks: false\n")
                .unwrap();
        let names: Vec<&str> = spec
            .merges
            .as_ref()
            .unwrap()
            .iter()
            .map(|b| b.as_str())
            .collect();
        assert_eq!(names, ["swarm/a", "swarm/b"]);
        assert_eq!(spec.requires_checks, Some(false));
        let one = parse_task(b"addressee: a\nprompt: p\nmerges: swarm/a\n").unwrap();
        assert_eq!(
            one.merges
                .unwrap()
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>(),
            ["swarm/a"]
        );
        let many = (0..21)
            .map(|i| format!("b{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (yaml, says) in [
            ("merges: []\n".to_string(), "at least one branch"),
            ("merges: [a, a]\n".to_string(), "names the branch `a` twice"),
            (
                format!("merges: [{many}]\n"),
                "names 21 branches; at most 20",
            ),
            ("merges: ['a..b']\n".to_string(), "branch"),
            (
                "merges: {a: b}\n".to_string(),
                "a branch name or a list of branch names",
            ),
            ("requires_checks: maybe\n".to_string(), "invalid boolean"),
        ] {
            let err =
                parse_task(format!("addressee: a\nprompt: p\n{yaml}").as_bytes()).unwrap_err();
            assert_eq!(err.line, 3, "{yaml}: {err}");
            assert!(err.to_string().contains(says), "{yaml}: {err}");
        }
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_task(b"addressee: a\nprompt: p\naddressee: b\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }

    #[test]
    fn hash_ignores_formatting_but_not_meaning() {
        let a = parse_task(b"addressee: a\nprompt: p\n").unwrap();
        let b = parse_task(b"# comment\nprompt: \"p\"\naddressee:   a\n").unwrap();
        let c = parse_task(b"addressee: a\nprompt: q\n").unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }

    /// Hostile content under `<<`, the merge key, which the task file accepts (it merges
    /// mappings of valid fields), so parsing reaches it and the limit is what refuses it. A
    /// hostile value under an unknown key, or under a field that expects a string, would stop
    /// at the key or the type instead and never test the limits.
    #[test]
    fn hostile_yaml_is_refused_by_its_limit() {
        let head = "addressee: a\nprompt: p\n";
        assert_eq!(
            parse_task(format!("{head}<<: {{epic: e}}\n").as_bytes())
                .unwrap()
                .epic
                .unwrap()
                .as_str(),
            "e",
            "a merge of valid fields is valid"
        );

        // 40 nested merges: the 33rd level, at the 32nd `{`, is one too deep.
        let deep = format!(
            "{head}<<: {}{{epic: e}}{}\n",
            "{<<: ".repeat(40),
            "}".repeat(40)
        );
        let err = parse_task(deep.as_bytes()).unwrap_err();
        assert_eq!((err.line, err.column), (3, 5 + 5 * 31), "{err}");
        assert_eq!(
            err.message,
            "nested deeper than 32 levels; that is the limit"
        );

        // 200 aliases of one anchor: the 101st is refused where it stands.
        let flood = format!("{head}<<: [&m {{epic: e}}{}]\n", ", *m".repeat(200));
        let err = parse_task(flood.as_bytes()).unwrap_err();
        assert_eq!((err.line, err.column), (3, 20 + 4 * 100), "{err}");
        assert_eq!(
            err.message,
            "more than 100 aliases (`*name`); that is the limit"
        );

        // A billion laughs in 90 aliases: under the alias limit, refused by the values they
        // would expand to, before it is expanded.
        let mut bomb = format!("{head}<<: [&a0 {{epic: e}}");
        for i in 1..10 {
            bomb.push_str(&format!(
                ", &a{i} {{<<: [{}]}}",
                vec![format!("*a{}", i - 1); 10].join(", ")
            ));
        }
        bomb.push_str("]\n");
        let err = parse_task(bomb.as_bytes()).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.starts_with("more than 20000 values"), "{err}");

        let big = vec![b'#'; 11 * 1024 * 1024];
        let err = parse_task(&big).unwrap_err();
        assert!(err.message.contains("limit"), "{err}");
        assert!(parse_task(b"\xff\xfe")
            .unwrap_err()
            .message
            .contains("UTF-8"));
    }

    #[test]
    fn a_timeout_is_one_second_to_seven_days() {
        for (text, ok) in [
            ("0s", false),
            ("1s", true),
            ("2h", true),
            ("7days", true),
            ("168h", true),
            ("7days 1s", false),
            ("8days", false),
        ] {
            assert_eq!(Timeout::parse(text).is_ok(), ok, "{text}");
        }
        assert_eq!(Timeout::MAX, Duration::from_secs(604_800));
    }
}
