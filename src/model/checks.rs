//! Required checks: whether a task waits for CI before it runs, on which branches, and what the
//! checks GitHub reports on a branch's head say about it. Pure.

use super::{effective_branch, Role, TaskRow};

/// The prefix of the engine's own check runs and commit statuses (`swarm/<key>`): they report
/// tasks, not CI, and never hold a merge back unless a project requires one by name.
pub const OWN_PREFIX: &str = "swarm/";

/// Whether `row` waits for required checks before it is claimed (when its project is on
/// GitHub): every `merge` task, and any task whose file says `requires_checks: true`. A task
/// file cannot turn the wait off for a merge: the manager that writes task files is an agent,
/// and only the engine's config (`required_checks = []`) may let merges skip CI.
pub fn requires_checks(row: &TaskRow) -> bool {
    row.role() == Role::Merge || row.spec.requires_checks == Some(true)
}

/// The branches whose head's checks `row` waits for: those it merges, else its own branch.
pub fn gated_branches(row: &TaskRow, default_branch: &str) -> Vec<String> {
    match &row.spec.merges {
        Some(m) => m.iter().map(|b| b.as_str().to_string()).collect(),
        None => vec![effective_branch(row, default_branch)],
    }
}

/// Where one check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    Pending,
    Passed,
    Failed,
}

impl CheckState {
    /// A check run's `status` and `conclusion`. `neutral` and `skipped` pass, as they do for
    /// GitHub's branch protection; a check that is not completed is pending.
    pub fn of_run(status: &str, conclusion: Option<&str>) -> Self {
        if status != "completed" {
            return Self::Pending;
        }
        match conclusion {
            Some("success" | "neutral" | "skipped") => Self::Passed,
            _ => Self::Failed,
        }
    }

    /// A commit status's `state` (`error`, `failure`, `pending`, `success`).
    pub fn of_status(state: &str) -> Self {
        match state {
            "success" => Self::Passed,
            "pending" => Self::Pending,
            _ => Self::Failed,
        }
    }
}

/// A check reported on a commit: a check run (its name) or a commit status (its context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub name: String,
    pub state: CheckState,
}

/// What the checks of one branch's head say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Green,
    /// Checks still to report or running, by name.
    Pending(Vec<String>),
    /// Checks that failed (and those still pending), by name.
    Failing {
        failed: Vec<String>,
        pending: Vec<String>,
    },
}

/// The verdict on a branch head from the checks reported on it. `required`: the names that
/// must pass (the project's, or the default branch's protection), each missing one pending;
/// `None`: every reported check counts except the engine's own, and no check at all is green.
/// A name reported twice (a check run and a status) counts with its worst state.
pub fn verdict(required: Option<&[String]>, reported: &[Reported]) -> Verdict {
    let worst = |name: &str| -> Option<CheckState> {
        reported
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.state)
            .max_by_key(|s| match s {
                CheckState::Passed => 0,
                CheckState::Pending => 1,
                CheckState::Failed => 2,
            })
    };
    let names: Vec<String> = match required {
        Some(r) => r.to_vec(),
        None => {
            let mut n: Vec<String> = reported
                .iter()
                .filter(|r| !r.name.starts_with(OWN_PREFIX))
                .map(|r| r.name.clone())
                .collect();
            n.sort();
            n.dedup();
            n
        }
    };
    let (mut failed, mut pending) = (Vec::new(), Vec::new());
    for name in names {
        match worst(&name) {
            Some(CheckState::Passed) => {}
            Some(CheckState::Failed) => failed.push(name),
            Some(CheckState::Pending) | None => pending.push(name),
        }
    }
    if !failed.is_empty() {
        Verdict::Failing { failed, pending }
    } else if !pending.is_empty() {
        Verdict::Pending(pending)
    } else {
        Verdict::Green
    }
}

/// What a task waits for, in words, from each gated branch's verdict (`None` for a branch
/// that does not exist yet); `None` when every branch is green.
pub fn waits_for(verdicts: &[(String, Option<Verdict>)]) -> Option<String> {
    let parts: Vec<String> = verdicts
        .iter()
        .filter_map(|(branch, v)| match v {
            None => Some(format!("`{branch}` does not exist yet")),
            Some(Verdict::Green) => None,
            Some(Verdict::Pending(p)) => Some(format!("`{branch}`: {} pending", p.join(", "))),
            Some(Verdict::Failing { failed, pending }) => {
                let mut s = format!("`{branch}`: {} failed", failed.join(", "));
                if !pending.is_empty() {
                    s.push_str(&format!("; {} pending", pending.join(", ")));
                }
                Some(s)
            }
        })
        .collect();
    (!parts.is_empty()).then(|| format!("required checks: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, state: CheckState) -> Reported {
        Reported {
            name: name.into(),
            state,
        }
    }
    use CheckState::{Failed, Passed, Pending};

    fn row(yaml: &str) -> TaskRow {
        let spec = crate::spec::parse_task(yaml.as_bytes()).unwrap();
        crate::model::NewTask::from_spec(&crate::spec::TaskKey::new("t").unwrap(), &spec).into_row(
            "web",
            crate::model::Origin::File,
            Some("c0"),
            chrono::Utc::now(),
        )
    }

    #[test]
    fn merges_wait_by_default_others_when_asked_on_what_they_merge_else_their_branch() {
        let cases = [
            ("addressee: a\nprompt: p\n", false, vec!["swarm/t"]),
            (
                "addressee: a\nprompt: p\nkind: merge\nbranch: main\n",
                true,
                vec!["main"],
            ),
            (
                "addressee: a\nprompt: p\nkind: merge\nbranch: main\nmerges: [swarm/x, swarm/y]\n",
                true,
                vec!["swarm/x", "swarm/y"],
            ),
            (
                "addressee: a\nprompt: p\nkind: merge\nrequires_checks: false\n",
                true,
                vec!["swarm/t"],
            ),
            (
                "addressee: a\nprompt: p\nrequires_checks: false\n",
                false,
                vec!["swarm/t"],
            ),
            (
                "addressee: a\nprompt: p\nkind: deploy\nrequires_checks: true\n",
                true,
                vec!["swarm/t"],
            ),
            ("addressee: a\nprompt: p\nkind: plan\n", false, vec!["main"]),
        ];
        for (yaml, waits, branches) in cases {
            let r = row(yaml);
            assert_eq!(requires_checks(&r), waits, "{yaml}");
            assert_eq!(gated_branches(&r, "main"), branches, "{yaml}");
        }
    }

    #[test]
    fn check_runs_and_statuses_map_to_states() {
        for (status, conclusion, want) in [
            ("queued", None, Pending),
            ("in_progress", None, Pending),
            ("waiting", None, Pending),
            ("completed", Some("success"), Passed),
            ("completed", Some("neutral"), Passed),
            ("completed", Some("skipped"), Passed),
            ("completed", Some("failure"), Failed),
            ("completed", Some("cancelled"), Failed),
            ("completed", Some("timed_out"), Failed),
            ("completed", Some("action_required"), Failed),
            ("completed", Some("stale"), Failed),
            ("completed", None, Failed),
        ] {
            assert_eq!(
                CheckState::of_run(status, conclusion),
                want,
                "{status} {conclusion:?}"
            );
        }
        for (state, want) in [
            ("success", Passed),
            ("pending", Pending),
            ("failure", Failed),
            ("error", Failed),
        ] {
            assert_eq!(CheckState::of_status(state), want, "{state}");
        }
    }

    #[test]
    fn verdicts_follow_the_required_checks_or_else_every_check_but_the_engines() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let req = s(&["ci/test", "lint"]);
        let cases: Vec<(Option<&[String]>, Vec<Reported>, Verdict)> = vec![
            // Nothing reported and nothing required: green.
            (None, vec![], Verdict::Green),
            // The engine's own report does not count unless required.
            (None, vec![r("swarm/login", Pending)], Verdict::Green),
            (
                None,
                vec![r("ci/test", Passed), r("lint", Pending)],
                Verdict::Pending(s(&["lint"])),
            ),
            (
                None,
                vec![r("lint", Failed), r("ci/test", Pending)],
                Verdict::Failing {
                    failed: s(&["lint"]),
                    pending: s(&["ci/test"]),
                },
            ),
            // Required and not reported yet: pending.
            (
                Some(&req),
                vec![r("ci/test", Passed)],
                Verdict::Pending(s(&["lint"])),
            ),
            (
                Some(&req),
                vec![r("ci/test", Passed), r("lint", Passed)],
                Verdict::Green,
            ),
            // A check nobody requires does not hold a required set back.
            (
                Some(&req),
                vec![r("ci/test", Passed), r("lint", Passed), r("slow", Failed)],
                Verdict::Green,
            ),
            // The same name as a check run and a status: the worse counts.
            (
                Some(&req),
                vec![
                    r("ci/test", Passed),
                    r("ci/test", Failed),
                    r("lint", Passed),
                ],
                Verdict::Failing {
                    failed: s(&["ci/test"]),
                    pending: vec![],
                },
            ),
            (
                None,
                vec![r("ci/test", Pending), r("ci/test", Passed)],
                Verdict::Pending(s(&["ci/test"])),
            ),
        ];
        for (required, reported, want) in cases {
            assert_eq!(
                verdict(required, &reported),
                want,
                "{required:?} {reported:?}"
            );
        }
    }

    #[test]
    fn what_a_task_waits_for_names_each_branch_and_check() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(waits_for(&[("a".into(), Some(Verdict::Green))]), None);
        assert_eq!(waits_for(&[]), None);
        assert_eq!(
            waits_for(&[
                ("a".into(), Some(Verdict::Green)),
                ("b".into(), Some(Verdict::Pending(s(&["ci"])))),
                ("c".into(), Some(Verdict::Failing { failed: s(&["lint", "x"]), pending: s(&["ci"]) })),
                ("d".into(), None),
            ])
            .as_deref(),
            Some("required checks: `b`: ci pending; `c`: lint, x failed; ci pending; `d` does not exist yet")
        );
    }
}
