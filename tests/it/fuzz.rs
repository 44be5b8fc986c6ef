//! Property tests of every parser that reads input from outside: task files, status files,
//! config files, webhook payloads, comment commands and the agent's stream-json output. None may
//! panic, whatever the bytes; hostile YAML (a 10 MB file, deep nesting, an alias bomb) is
//! refused with a clear error instead of being expanded.

use std::path::Path;

use coding_swarm::config::Config;
use coding_swarm::forge::webhook::{parse_command, parse_event, verify_signature};
use coding_swarm::spec::{parse_task, StatusSpec};
use coding_swarm::worker::claude::{classify, StreamState};
use proptest::prelude::*;

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
                            json in "\\{\"(action|ref|comment|issue|repository)\": [\\[\\]{}\"a-z0-9:, ]{0,80}\\}",
                            comment in "[ -~\n]{0,120}") {
        let _ = parse_event(event, &body);
        let _ = parse_event(event, json.as_bytes());
        let _ = verify_signature(b"secret", &body, Some(&comment));
        let _ = parse_command(&comment, "@swarm");
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

#[test]
fn hostile_task_files_are_refused_clearly() {
    let ten_mb = format!(
        "addressee: a\nprompt: |\n{}",
        "  x\n".repeat(10 * 1024 * 1024 / 4)
    );
    let e = parse_task(ten_mb.as_bytes()).unwrap_err();
    assert!(e.message.contains("limit"), "{e}");

    let deep = format!(
        "addressee: a\nprompt: p\nx: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let e = parse_task(deep.as_bytes()).unwrap_err();
    assert!(!e.message.is_empty());

    // A billion laughs: each level multiplies by ten.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("addressee: a\nprompt: p\n");
    // Refused by the alias budget, not expanded (a billion items would not fit in memory).
    let e = parse_task(bomb.as_bytes()).unwrap_err();
    assert!(!e.message.is_empty(), "{e}");
}
