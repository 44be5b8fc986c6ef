//! The engine's watch of its Jobs under the API server's watch semantics: a Job that ended
//! while no engine watched, adopted in either order of watch and launch; an end and a deletion
//! the watch missed (410 Gone, a new list); a watch resumed from a BOOKMARK after the history
//! was compacted, and after its timeout. And the fake API server itself, checked with the real
//! client against the semantics the engine relies on.

use std::time::{Duration, Instant};

use coding_swarm::runtime::kubernetes::build_job;
use coding_swarm::runtime::Runtime;
use coding_swarm::spec::{ErrorClass, RunResult};
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

use crate::kube::{cfg, created, launch, next, runtime};
use crate::kubeapi::{complete, pod_terminated, ApiServer, NS};

/// What a worker that finished while no engine watched left behind: its Job, ended, with the
/// pod and its termination message.
fn finished_while_unwatched(server: &ApiServer, name: &str) -> RunResult {
    let done = RunResult {
        success: true,
        summary: Some("finished while no engine watched".into()),
        ..RunResult::default()
    };
    server.api.insert_job(
        serde_json::to_value(build_job(&launch(name, 600), &cfg(&server.url))).unwrap(),
    );
    server.api.finish(
        name,
        complete(),
        pod_terminated(0, "Completed", Some(&serde_json::to_string(&done).unwrap())),
    );
    done
}

/// Waits until the journal satisfies `check`.
async fn until(server: &ApiServer, what: &str, check: impl Fn(&[String]) -> bool) {
    let start = Instant::now();
    while !check(&server.api.journal()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never saw {what}: {:#?}",
            server.api.journal()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the journal has an entry that `matches`; its position.
async fn journaled(server: &ApiServer, what: &str, matches: impl Fn(&str) -> bool) -> usize {
    let start = Instant::now();
    loop {
        if let Some(i) = server.api.journal().iter().position(|e| matches(e)) {
            return i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never saw {what}: {:#?}",
            server.api.journal()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn position(journal: &[String], what: &str, matches: impl Fn(&str) -> bool) -> usize {
    journal
        .iter()
        .position(|e| matches(e))
        .unwrap_or_else(|| panic!("no {what} in {journal:#?}"))
}

const JOBS: &str = "/apis/batch/v1/namespaces/coding-swarm/jobs";

fn is_watch(e: &str) -> bool {
    e.starts_with(&format!("GET {JOBS}?")) && e.contains("watch=true")
}

fn is_open_watch(e: &str) -> bool {
    e.starts_with("opened a watch")
}

fn is_list_answer(e: &str) -> bool {
    e.starts_with(&format!("answered LIST {JOBS}:"))
}

fn is_create(e: &str) -> bool {
    e.starts_with(&format!("POST {JOBS}?"))
}

/// The watch saw the ended Job first (the watcher asks for its watch only once the engine has
/// taken in every Job of its list); the launch that adopts it then completes before it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ended_unwatched_completes_at_once_when_the_watch_saw_it_first() {
    let server = ApiServer::start().await;
    let done = finished_while_unwatched(&server, "run-finished");
    let (rt, mut rx) = runtime(&server).await;
    journaled(&server, "the watcher's watch", is_watch).await;
    rt.launch(launch("run-finished", 600)).await.unwrap();
    let c = rx.try_recv().expect("completed before the launch returned");
    assert_eq!((c.run_name.as_str(), c.result), ("run-finished", done));
    let journal = server.api.journal();
    let listed = position(&journal, "the list", |e| {
        is_list_answer(e) && e.contains("run-finished")
    });
    let watched = position(&journal, "the watch", is_watch);
    let created = position(&journal, "the create", is_create);
    assert!(listed < watched && watched < created, "{journal:#?}");
    assert!(!rt.is_tracked("run-finished"));
}

/// The launch comes first: the watcher's list is held until the launch has returned, and the
/// launch still completes the run at once, from the Job it reads itself. When the list arrives
/// later, nothing completes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ended_unwatched_completes_at_once_when_the_launch_comes_first() {
    let server = ApiServer::start().await;
    let done = finished_while_unwatched(&server, "run-finished");
    server.api.hold_lists();
    let (rt, mut rx) = runtime(&server).await;
    journaled(&server, "the watcher's list request", |e| {
        e.starts_with(&format!("GET {JOBS}?")) && !e.contains("watch=true")
    })
    .await;
    rt.launch(launch("run-finished", 600)).await.unwrap();
    let c = rx.try_recv().expect("completed before the launch returned");
    assert_eq!((c.run_name.as_str(), c.result), ("run-finished", done));
    server.api.release_lists();
    // The watcher asks for its watch once the engine has taken in the list.
    journaled(&server, "the watcher's watch", is_watch).await;
    let journal = server.api.journal();
    let created = position(&journal, "the create", is_create);
    let listed = position(&journal, "the list", is_list_answer);
    assert!(created < listed, "{journal:#?}");
    assert!(rx.try_recv().is_err(), "completed once");
}

/// The Job is deleted while the watch is down and the history is compacted past it: the watch
/// resumes into 410 Gone, the watcher lists again, and the Job is just not there. No DELETED
/// event ever arrives; the engine reports the run lost anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_vanishes_unseen_by_the_watch_is_still_reported() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    rt.launch(launch("run-unseen", 600)).await.unwrap();
    created(&server, "run-unseen").await;
    journaled(&server, "the watcher's watch", is_watch).await;
    server.api.vanish("run-unseen");
    let c = next(&mut rx).await;
    assert_eq!(c.result.error_class, Some(ErrorClass::Infrastructure));
    assert!(c.result.error.unwrap().contains("gone"));
    // The watcher did get 410 and list again, and the list did not have the Job.
    until(&server, "a second list", |j| {
        j.iter().filter(|e| is_list_answer(e)).count() >= 2
    })
    .await;
    let journal = server.api.journal();
    assert!(
        journal.iter().any(|e| e.starts_with("sent ERROR 410")),
        "{journal:#?}"
    );
    let lists: Vec<&String> = journal.iter().filter(|e| is_list_answer(e)).collect();
    assert!(!lists[1].contains("run-unseen"), "{lists:?}");
}

/// The Job ends while the watch is down and the history is compacted past its end: the watch
/// gets 410 and the watcher lists again; the ended Job in that list (or the engine's periodic
/// read, whichever comes first) completes the run, with the worker's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ends_unseen_by_the_watch_still_completes() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    rt.launch(launch("run-relisted", 600)).await.unwrap();
    journaled(&server, "the watcher's watch", is_open_watch).await;
    let done = RunResult {
        success: true,
        summary: Some("ended during the gap".into()),
        ..RunResult::default()
    };
    server.api.finish_unseen(
        "run-relisted",
        complete(),
        pod_terminated(0, "Completed", Some(&serde_json::to_string(&done).unwrap())),
    );
    assert_eq!(next(&mut rx).await.result, done);
    until(&server, "a second list", |j| {
        j.iter().filter(|e| is_list_answer(e)).count() >= 2
    })
    .await;
    let journal = server.api.journal();
    assert!(
        journal.iter().any(|e| e.starts_with("sent ERROR 410")),
        "{journal:#?}"
    );
    assert!(rx.try_recv().is_err(), "completed once");
}

/// Someone else's Job in the namespace, without the engine's label.
fn other_job(name: &str) -> serde_json::Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {"app": "nightly-backup"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "backup", "image": "backup:1"}]}}}})
}

/// Writes the engine's watch does not select move the resourceVersion on without an event for
/// it. A BOOKMARK carries the watch past them, so after the history is compacted and the watch
/// ends, the watcher resumes from the bookmark instead of getting 410 and listing everything
/// again ("Watch bookmarks").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_resumes_from_a_bookmark_after_the_history_is_compacted() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    rt.launch(launch("run-marked", 600)).await.unwrap();
    journaled(&server, "the watcher's watch", is_open_watch).await;
    for i in 0..3 {
        server.api.insert_job(other_job(&format!("backup-{i}")));
    }
    let now = server.api.resource_version();
    server.api.bookmark();
    journaled(&server, "the bookmark", |e| {
        e == format!("sent BOOKMARK {now}")
    })
    .await;
    server.api.compact();
    server.api.end_watches();
    let resumed = format!("resourceVersion={now}");
    journaled(&server, "the watch resumed at the bookmark", |e| {
        is_watch(e) && e.contains(&resumed)
    })
    .await;
    server.api.finish(
        "run-marked",
        complete(),
        pod_terminated(
            0,
            "Completed",
            Some(
                &serde_json::to_string(&RunResult {
                    success: true,
                    ..RunResult::default()
                })
                .unwrap(),
            ),
        ),
    );
    assert!(next(&mut rx).await.result.success);
    let journal = server.api.journal();
    assert_eq!(
        journal.iter().filter(|e| is_list_answer(e)).count(),
        1,
        "no second list: {journal:#?}"
    );
    assert!(
        !journal.iter().any(|e| e.starts_with("sent ERROR")),
        "{journal:#?}"
    );
}

/// The API server ends every watch after its timeout; the watcher resumes from the last version
/// it saw, and the events in between reach the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_times_out_is_resumed_without_losing_events() {
    let server = ApiServer::start().await;
    server.api.set_watch_limit(Duration::from_millis(500));
    let (rt, mut rx) = runtime(&server).await;
    rt.launch(launch("run-long", 600)).await.unwrap();
    journaled(&server, "a watch that timed out", |e| {
        e == "a watch timed out"
    })
    .await;
    server.api.finish(
        "run-long",
        complete(),
        pod_terminated(
            0,
            "Completed",
            Some(
                &serde_json::to_string(&RunResult {
                    success: true,
                    ..RunResult::default()
                })
                .unwrap(),
            ),
        ),
    );
    assert!(next(&mut rx).await.result.success);
    let journal = server.api.journal();
    let watches: Vec<&String> = journal.iter().filter(|e| is_watch(e)).collect();
    assert!(watches.len() >= 2, "{journal:#?}");
    assert!(
        watches
            .iter()
            .all(|w| w.contains("timeoutSeconds=") && w.contains("allowWatchBookmarks=true")),
        "{watches:?}"
    );
    assert_eq!(
        journal.iter().filter(|e| is_list_answer(e)).count(),
        1,
        "{journal:#?}"
    );
}

/// What the engine relies on from the API server, checked on the fake with the real client, so
/// the tests above run against these semantics: every write in the watch history with a
/// resourceVersion that only grows (the client's own creates and deletes too), watches from a
/// version, BOOKMARKs only when asked, 410 Gone for a compacted version, label selectors for
/// Jobs and pods, and the Status of each refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_api_server_answers_as_the_api_server_does() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{
        Api, DeleteParams, ListParams, PostParams, VersionMatch, WatchEvent, WatchParams,
    };
    use kube::core::response::StatusSummary;

    let server = ApiServer::start().await;
    let client = kube::Client::try_from(kube::Config::new(server.url.parse().unwrap())).unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let pp = PostParams::default();
    let job = |name: &str| build_job(&launch(name, 600), &cfg(&server.url));
    let refusal = |r: Result<Job, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("not refused: {other:?}"),
    };

    let a = jobs.create(&pp, &job("run-a")).await.unwrap();
    let rv_a: u64 = a
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(a.metadata.uid.as_deref(), Some("uid-run-a"));
    let template_labels = a
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(
        template_labels["job-name"], "run-a",
        "the server labels the pods with their Job"
    );

    // 409 AlreadyExists, 422 Invalid with its causes, 404 NotFound: each a Status.
    let s = refusal(jobs.create(&pp, &job("run-a")).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.status, Some(StatusSummary::Failure));
    assert_eq!(s.message, "jobs.batch \"run-a\" already exists");
    assert_eq!(s.details.as_ref().unwrap().name, "run-a");
    let mut no_container = job("run-b");
    no_container
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers
        .clear();
    let s = refusal(jobs.create(&pp, &no_container).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let causes = s.details.unwrap().causes;
    assert_eq!(
        causes[0].field, "spec.template.spec.containers",
        "{causes:?}"
    );
    let mut unnamed = job("run-b");
    unnamed.metadata.name = None;
    let s = refusal(jobs.create(&pp, &unnamed).await);
    assert!(
        s.code == 422 && s.message.contains("metadata.name: Required value"),
        "{s:?}"
    );
    for bad in ["Run_B", "run-b-", &"r".repeat(64)] {
        let mut named = job("run-b");
        named.metadata.name = Some(bad.to_string());
        let s = refusal(jobs.create(&pp, &named).await);
        assert!(
            s.code == 422 && s.message.contains("metadata.name: Invalid value"),
            "{bad}: {s:?}"
        );
    }
    match jobs.get("nope").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
            assert_eq!(s.message, "jobs.batch \"nope\" not found");
            let d = s.details.unwrap();
            assert_eq!(
                (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
                ("nope", "batch", "jobs")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(jobs.get_opt("nope").await.unwrap().is_none());

    // Label selectors, equality- and set-based, on Jobs and on pods.
    let mut other = job("run-c");
    other
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("coding-swarm/project".into(), "other".into());
    jobs.create(&pp, &other).await.unwrap();
    server.api.insert_job(other_job("backup"));
    server
        .api
        .finish("run-a", complete(), pod_terminated(0, "Completed", None));
    let names = |selector: &'static str| {
        let jobs = jobs.clone();
        async move {
            let lp = ListParams::default().labels(selector);
            let mut n: Vec<String> = jobs
                .list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|j| j.metadata.name)
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("coding-swarm/project=webapp").await, ["run-a"]);
    assert_eq!(names("coding-swarm/project==other").await, ["run-c"]);
    assert_eq!(
        names("coding-swarm/project!=webapp").await,
        ["backup", "run-c"]
    );
    assert_eq!(
        names("coding-swarm/project in (webapp,other)").await,
        ["run-a", "run-c"]
    );
    assert_eq!(
        names("coding-swarm/project notin (webapp)").await,
        ["backup", "run-c"]
    );
    assert_eq!(
        names("app.kubernetes.io/managed-by=coding-swarm,coding-swarm/project").await,
        ["run-a", "run-c"]
    );
    assert_eq!(names("!coding-swarm/task").await, ["backup"]);
    assert_eq!(names("").await, ["backup", "run-a", "run-c"]);
    let pod_names = |selector: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(pod_names("job-name=run-a").await, 1);
    assert_eq!(pod_names("job-name=run-c").await, 0);
    assert!(
        matches!(jobs.list(&ListParams::default().labels("a in b")).await, Err(kube::Error::Api(s)) if s.code == 400)
    );

    // The client's own delete is a write: a DELETED event with a newer version; its pods go
    // with a background deletion.
    jobs.delete("run-a", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(pod_names("job-name=run-a").await, 0);
    let events: Vec<WatchEvent<Job>> = jobs
        .watch(&WatchParams::default().timeout(1), &rv_a.to_string())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let seen: Vec<(String, String, u64)> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(j) => Some(("ADDED", j)),
            WatchEvent::Modified(j) => Some(("MODIFIED", j)),
            WatchEvent::Deleted(j) => Some(("DELETED", j)),
            _ => None,
        })
        .map(|(t, j)| {
            (
                t.to_string(),
                j.metadata.name.clone().unwrap(),
                j.metadata
                    .resource_version
                    .clone()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|(t, n, _)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("ADDED", "run-c"),
            ("ADDED", "backup"),
            ("MODIFIED", "run-a"),
            ("DELETED", "run-a")
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "{seen:?}");
    assert!(seen[0].2 > rv_a);
    // A watch with a selector sees only what it selects.
    let selected: Vec<WatchEvent<Job>> = jobs
        .watch(
            &WatchParams::default()
                .labels("app=nightly-backup")
                .timeout(1),
            &rv_a.to_string(),
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        matches!(&selected[..], [WatchEvent::Added(j)] if j.metadata.name.as_deref() == Some("backup"))
    );

    // BOOKMARKs only when asked for, carrying the current version.
    let now = server.api.resource_version().to_string();
    for (params, wanted) in [
        (WatchParams::default(), true),
        (WatchParams::default().disable_bookmarks(), false),
    ] {
        let mut stream = jobs.watch(&params.timeout(30), &now).await.unwrap().boxed();
        until(&server, "the watch", |j| {
            j.iter().filter(|e| is_open_watch(e)).count() >= 3 + usize::from(!wanted)
        })
        .await;
        server.api.bookmark();
        server.api.end_watches();
        let got: Vec<WatchEvent<Job>> = (&mut stream).try_collect().await.unwrap();
        let marks: Vec<&str> = got
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(marks, if wanted { vec![now.as_str()] } else { vec![] });
    }

    // Compacted: a watch from before gets an ERROR event with 410 Expired; an exact list, 410.
    server.api.compact();
    let mut stream = jobs
        .watch(&WatchParams::default(), &rv_a.to_string())
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
            assert!(e.message.starts_with("too old resource version"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the watch ends after the 410"
    );
    let lp = ListParams::default()
        .at(&rv_a.to_string())
        .matching(VersionMatch::Exact);
    assert!(
        matches!(jobs.list(&lp).await, Err(kube::Error::Api(s)) if s.code == 410 && s.reason == "Expired")
    );
    // From the current version, a watch goes on.
    let current = server.api.resource_version().to_string();
    let mut stream = jobs
        .watch(&WatchParams::default().timeout(30), &current)
        .await
        .unwrap()
        .boxed();
    jobs.create(&pp, &job("run-d")).await.unwrap();
    assert!(
        matches!(stream.next().await, Some(Ok(WatchEvent::Added(j))) if j.metadata.name.as_deref() == Some("run-d"))
    );
}
