//! GitHub's webhook payloads as GitHub sends them: the examples of the npm package
//! `@octokit/webhooks-examples` (captured deliveries, installed by `.ci/run` into
//! `$HOME/.cache/coding-swarm/webhooks-examples`, found through `SWARM_TEST_WEBHOOK_EXAMPLES`),
//! with only the fields a test needs changed.

use serde_json::Value;

/// The package's directory: `SWARM_TEST_WEBHOOK_EXAMPLES`, else where `.ci/run` installs it.
fn package_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("SWARM_TEST_WEBHOOK_EXAMPLES") {
        return d.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    std::path::Path::new(&home)
        .join(".cache/coding-swarm/webhooks-examples/node_modules/@octokit/webhooks-examples")
}

fn all() -> &'static Vec<Value> {
    static ALL: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let path = package_dir().join("api.github.com/index.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): run .ci/run, or install @octokit/webhooks-examples and set SWARM_TEST_WEBHOOK_EXAMPLES to its directory",
                path.display()
            )
        });
        serde_json::from_str(&text).expect("the examples are JSON")
    })
}

/// The first example of `event` with `action` (None: an event without actions, like `status`).
pub fn example(event: &str, action: Option<&str>) -> Value {
    let e = all()
        .iter()
        .find(|e| e["name"] == event)
        .unwrap_or_else(|| panic!("no examples of {event}"));
    e["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| action.is_none_or(|a| x["action"] == a))
        .unwrap_or_else(|| panic!("no example of {event}.{action:?}"))
        .clone()
}

/// Sets the field at JSON pointer `at`, which the example must have: a test changes what
/// GitHub sends, it does not invent fields.
pub fn set(v: &mut Value, at: &str, to: Value) {
    *v.pointer_mut(at)
        .unwrap_or_else(|| panic!("the example has no {at}")) = to;
}

/// The example, as a delivery from `full_name` (`owner/name`).
pub fn in_repo(mut v: Value, full_name: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap();
    set(&mut v, "/repository/full_name", full_name.into());
    set(&mut v, "/repository/name", name.into());
    set(&mut v, "/repository/owner/login", owner.into());
    v
}

/// A user object of the example (`at`) made `login` of `kind` (`User` or `Bot`).
pub fn user(v: &mut Value, at: &str, login: &str, kind: &str) {
    set(v, &format!("{at}/login"), login.into());
    set(v, &format!("{at}/type"), kind.into());
}

/// Makes the example's issue a pull request, as GitHub's `issue_comment` deliveries for a
/// comment on a pull request are: "`issue.pull_request`: present if the issue is a pull
/// request" (docs.github.com, webhook events and payloads, `issue_comment`). The package's
/// `issue_comment` examples are all on plain issues, so this field is the one a test adds.
pub fn on_pull_request(v: &mut Value, full_name: &str, number: u64) {
    set(v, "/issue/number", number.into());
    let issue = v
        .pointer_mut("/issue")
        .and_then(Value::as_object_mut)
        .expect("the example has an issue");
    issue.insert(
        "pull_request".into(),
        serde_json::json!({
            "url": format!("https://api.github.com/repos/{full_name}/pulls/{number}"),
            "html_url": format!("https://github.com/{full_name}/pull/{number}"),
            "diff_url": format!("https://github.com/{full_name}/pull/{number}.diff"),
            "patch_url": format!("https://github.com/{full_name}/pull/{number}.patch"),
            "merged_at": null
        }),
    );
}
