//! Property tests of every parser that reads input from outside: task files, status files,
//! config files, webhook payloads, comment commands and the agent's stream-json output. None may
//! panic, whatever the bytes; hostile YAML (a 10 MB file, deep nesting, an alias flood, an alias
//! bomb) is refused by its limit, with a clear error at its place, instead of being expanded.
//! JSON comes three ways: GitHub's shape with any extra fields (accepted), that shape with a
//! required field missing or of the wrong type (refused, naming what is wrong), and text that is
//! not JSON at all (refused).

use std::path::Path;

use coding_swarm::config::Config;
use coding_swarm::forge::webhook::{parse_command, parse_event, verify_signature};
use coding_swarm::spec::{parse_task, StatusSpec};
use coding_swarm::worker::claude::{classify, StreamState};
use proptest::prelude::*;
use serde_json::{json, Value};

/// YAML-ish text: keys of task files, punctuation YAML cares about, and junk.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("addressee: ".to_string()),
        Just("prompt: ".to_string()),
        Just("timeout: ".to_string()),
        Just("priority: ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just("&a ".to_string()),
        Just("*a ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("|".to_string()),
        Just(">".to_string()),
        Just("#".to_string()),
        Just("---\n".to_string()),
        Just("!!binary ".to_string()),
        Just("<<: *a\n".to_string()),
        "[a-z0-9 ]{0,12}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn task_files_never_panic(text in yamlish(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_task(text.as_bytes());
        let _ = parse_task(&bytes);
        let _ = serde_saphyr::from_str::<StatusSpec>(&text);
    }

    #[test]
    fn errors_point_inside_the_file(text in yamlish()) {
        if let Err(e) = parse_task(text.as_bytes()) {
            let lines = text.lines().count().max(1) as u64 + 1;
            prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}: {e}", e.line);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn configs_never_panic(text in "[a-z_\\[\\]=\" .0-9\n]{0,200}", key in "SWARM_[A-Z_]{1,20}", value in "[ -~]{0,20}") {
        let _ = Config::parse(&text, "fuzz", Path::new("/tmp"), std::iter::once((key, value)));
    }

    #[test]
    fn webhooks_never_panic(event in prop_oneof![Just("push"), Just("issue_comment"), Just("pull_request_review"), Just("pull_request_review_comment"), Just("ping")],
                            body in prop::collection::vec(any::<u8>(), 0..400),
                            json in any_json(),
                            comment in "[ -~\n]{0,120}") {
        let _ = parse_event(event, &body);
        let _ = parse_event(event, json.to_string().as_bytes());
        let _ = verify_signature(b"secret", &body, Some(&comment));
        let _ = parse_command(&comment, "@swarm");
    }

    /// GitHub sends far more than the engine reads: any extra field, of any shape, anywhere,
    /// changes nothing.
    #[test]
    fn webhooks_in_githubs_shape_are_read_whatever_else_they_carry(
        kind in 0..4usize,
        extras in prop::collection::vec((0..6usize, "[a-z_]{1,10}", any_json()), 0..8),
    ) {
        let (event, mut payload) = payload(kind);
        let mut paths = Vec::new();
        object_paths(&payload, String::new(), &mut paths);
        for (at, key, value) in extras {
            let object = payload.pointer_mut(&paths[at % paths.len()]).and_then(Value::as_object_mut).unwrap();
            if !object.contains_key(&key) {
                object.insert(key, value);
            }
        }
        let parsed = parse_event(event, payload.to_string().as_bytes());
        prop_assert!(parsed.is_ok(), "{event}: {parsed:?}");
        prop_assert_eq!(parsed.unwrap(), expected(kind));
    }

    /// A required field missing, or of another JSON type, is refused with an error that says
    /// so (and names a missing field).
    #[test]
    fn webhooks_with_a_required_field_of_the_wrong_shape_are_refused(
        kind in 0..4usize,
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(any_json()),
    ) {
        let (event, mut payload) = payload(kind);
        let fields = required(kind);
        let (path, wanted) = fields[pick.index(fields.len())];
        let (parent, field) = path.rsplit_once('/').unwrap();
        let object = payload.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match &replacement {
            Some(v) if fits(v, wanted) => return Ok(()),
            Some(v) => { object.insert(field.into(), v.clone()); }
            None => { object.remove(field); }
        }
        let err = match parse_event(event, payload.to_string().as_bytes()) {
            Err(e) => e.to_string(),
            Ok(ev) => return Err(TestCaseError::fail(format!("{path} as {replacement:?} was read: {ev:?}"))),
        };
        prop_assert!(err.contains(&format!("the {event} payload is not what GitHub sends")), "{err}");
        match replacement {
            None => prop_assert!(err.contains(&format!("missing field `{field}`")), "{path}: {err}"),
            Some(_) => prop_assert!(err.contains("invalid type") || err.contains("invalid value"), "{path}: {err}"),
        }
    }

    /// Text that is not JSON (here: GitHub's payload cut short) is refused for every event,
    /// not mistaken for one the engine ignores.
    #[test]
    fn webhooks_that_are_not_json_are_refused(kind in 0..5usize, cut in any::<prop::sample::Index>()) {
        let (event, payload) = if kind == 4 { ("ping", json!({"zen": "Keep it logically awesome.", "hook_id": 1})) } else { payload(kind) };
        let text = payload.to_string();
        let cut = 1 + cut.index(text.len() - 1);
        let got = parse_event(event, &text.as_bytes()[..cut]);
        prop_assert!(got.is_err(), "{event} cut at {cut}: {got:?}");
    }

    /// A result event whose fields have any JSON type is read, and it is a success only when
    /// it says so: `subtype` "success" and `is_error` false or absent.
    #[test]
    fn a_result_event_of_any_shape_succeeds_only_when_it_says_so(
        subtype in prop_oneof![Just(json!("success")), Just(json!("error_max_turns")), any_json()],
        is_error in prop::option::of(prop_oneof![Just(json!(false)), Just(json!(true)), any_json()]),
        fields in prop::collection::vec((prop_oneof![Just("result"), Just("num_turns"), Just("total_cost_usd"), Just("api_error_status"), Just("errors"), Just("session_id")], any_json()), 0..6),
    ) {
        let mut event = json!({"type": "result", "subtype": subtype});
        if let Some(e) = &is_error {
            event["is_error"] = e.clone();
        }
        for (k, v) in fields {
            event[k] = v;
        }
        let mut s = StreamState::default();
        prop_assert!(s.feed(&event.to_string()), "a result event ends the stream");
        let r = classify(&s, true, "", &|t| t.to_string());
        let says_success = subtype == json!("success") && matches!(is_error, None | Some(Value::Bool(false)));
        prop_assert_eq!(r.success, says_success, "{}", event);
        if !r.success {
            prop_assert!(r.error_class.is_some() && r.error.as_deref().is_some_and(|e| !e.is_empty()), "{r:?}");
        }
    }

    #[test]
    fn agent_output_never_panics(lines in prop::collection::vec("[ -~]{0,120}", 0..20), fields in "\\{\"type\":\"(result|system|rate_limit_event)\",[ -~]{0,100}\\}") {
        let mut s = StreamState::default();
        for l in lines.iter().chain(std::iter::once(&fields)) {
            if s.feed(l) {
                break;
            }
        }
        let _ = classify(&s, true, &lines.join("\n"), &|t| t.to_string());
    }
}

/// Hostile content under `<<`, the merge key, which a task file accepts (it merges mappings of
/// valid fields): parsing reaches it, and the limit is what refuses it, at its place.
#[test]
fn hostile_task_files_are_refused_by_their_limits() {
    let ten_mb = format!(
        "addressee: a\nprompt: |\n{}",
        "  x\n".repeat(10 * 1024 * 1024 / 4)
    );
    let e = parse_task(ten_mb.as_bytes()).unwrap_err();
    assert!(e.message.contains("the limit is 262144 bytes"), "{e}");

    // Ten thousand nested merges, refused at the 33rd level (the 32nd `{`).
    let deep = format!(
        "addressee: a\nprompt: p\n<<: {}{{epic: e}}{}\n",
        "{<<: ".repeat(10_000),
        "}".repeat(10_000)
    );
    let e = parse_task(deep.as_bytes()).unwrap_err();
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (
            3,
            5 + 5 * 31,
            "nested deeper than 32 levels; that is the limit"
        )
    );

    // A flood of aliases, refused at the 101st.
    let flood = format!(
        "addressee: a\nprompt: p\n<<: [&m {{epic: e}}{}]\n",
        ", *m".repeat(10_000)
    );
    let e = parse_task(flood.as_bytes()).unwrap_err();
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (
            3,
            20 + 4 * 100,
            "more than 100 aliases (`*name`); that is the limit"
        )
    );

    // A billion laughs, each level ten times the one before: 90 aliases, under their limit;
    // refused by the values they would expand to, before it expands (a billion would not fit
    // in memory).
    let mut bomb = String::from("addressee: a\nprompt: p\n<<:\n  - &a0 {epic: e}\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "  - &a{i} {{<<: [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]}}\n"
        ));
    }
    let e = parse_task(bomb.as_bytes()).unwrap_err();
    assert!(e.message.starts_with("more than 20000 values"), "{e}");
    assert!(
        (5..=13).contains(&e.line),
        "at the level that overflows: {e}"
    );
}

/// Any JSON value, nested up to three levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The fields the engine reads of each acted-on event, in GitHub's shape (trimmed by hand to
/// those fields; GitHub sends many more, which the first property adds at random).
fn payload(kind: usize) -> (&'static str, Value) {
    let repository = json!({"id": 1, "full_name": "acme/webapp"});
    let user = json!({"login": "ann", "type": "User"});
    let pull_request = json!({"number": 7, "head": {"ref": "swarm/login", "sha": "0123"}});
    match kind {
        0 => (
            "push",
            json!({"ref": "refs/heads/main", "after": "0123", "repository": repository}),
        ),
        1 => (
            "issue_comment",
            json!({"action": "created", "comment": {"id": 5, "body": "/swarm status", "user": user},
            "issue": {"number": 7, "pull_request": {"url": "u"}}, "repository": repository}),
        ),
        2 => (
            "pull_request_review",
            json!({"action": "submitted", "review": {"id": 6, "body": "/swarm status", "user": user, "state": "commented"},
            "pull_request": pull_request, "repository": repository}),
        ),
        _ => (
            "pull_request_review_comment",
            json!({"action": "created", "comment": {"id": 8, "body": "/swarm status", "user": user, "pull_request_review_id": 6},
            "pull_request": pull_request, "repository": repository}),
        ),
    }
}

fn expected(kind: usize) -> coding_swarm::forge::webhook::Event {
    use coding_swarm::forge::webhook::Event;
    let comment = |head_branch: Option<&str>| Event::Comment {
        repo: "acme/webapp".into(),
        number: 7,
        comment_id: Some(5),
        is_pull_request: true,
        head_branch: head_branch.map(str::to_string),
        author: "ann".into(),
        author_is_bot: false,
        body: "/swarm status".into(),
    };
    match kind {
        0 => Event::Push {
            repo: "acme/webapp".into(),
            branch: "main".into(),
            after: "0123".into(),
        },
        1 => comment(None),
        2 => Event::Review {
            repo: "acme/webapp".into(),
            number: 7,
            head_branch: "swarm/login".into(),
            review_id: 6,
            author: "ann".into(),
            author_is_bot: false,
            state: "commented".into(),
            body: "/swarm status".into(),
        },
        _ => Event::ReviewComment {
            repo: "acme/webapp".into(),
            number: 7,
            comment_id: Some(8),
            head_branch: "swarm/login".into(),
            review_id: Some(6),
            author: "ann".into(),
            author_is_bot: false,
            body: "/swarm status".into(),
        },
    }
}

/// What JSON type a required field must have.
#[derive(Clone, Copy)]
enum Wanted {
    Text,
    Count,
    Object,
}

fn fits(v: &Value, wanted: Wanted) -> bool {
    match wanted {
        Wanted::Text => v.is_string(),
        Wanted::Count => v.is_u64(),
        Wanted::Object => v.is_object(),
    }
}

/// The fields an event cannot be read without (JSON pointers), and their types.
fn required(kind: usize) -> Vec<(&'static str, Wanted)> {
    use Wanted::*;
    let mut fields = vec![("/repository/full_name", Text), ("/repository", Object)];
    match kind {
        0 => fields.push(("/ref", Text)),
        1 => fields.extend([
            ("/comment/user/login", Text),
            ("/comment/user", Object),
            ("/comment", Object),
            ("/issue/number", Count),
            ("/issue", Object),
        ]),
        2 => fields.extend([
            ("/review/id", Count),
            ("/review/state", Text),
            ("/review/user/login", Text),
            ("/review", Object),
            ("/pull_request/number", Count),
            ("/pull_request/head/ref", Text),
            ("/pull_request/head", Object),
        ]),
        _ => fields.extend([
            ("/comment/user/login", Text),
            ("/pull_request/number", Count),
            ("/pull_request/head/ref", Text),
            ("/pull_request", Object),
        ]),
    }
    fields
}

/// The JSON pointer of every object in `v`, outermost first.
fn object_paths(v: &Value, at: String, out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        out.push(at.clone());
        for (k, child) in m {
            object_paths(child, format!("{at}/{k}"), out);
        }
    }
}
