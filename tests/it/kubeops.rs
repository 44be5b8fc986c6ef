//! The Kubernetes runtime failing fast and retrying within bounds, with the real kube client
//! against the fake API: a run whose pod cannot pull its image fails after `start_timeout`, one
//! that cannot start at all (a missing Secret) fails at once, each with the container, reason
//! and message Kubernetes gives and its Job deleted; a pod that starts, or still pulls within
//! the timeout, is left alone; a 429 storm costs a bounded number of requests, with the
//! server's `Retry-After` honoured.

use std::time::{Duration, Instant};

use coding_swarm::config::KubernetesConfig;
use coding_swarm::runtime::kubernetes::KUBE_TRIES;
use coding_swarm::runtime::{Completion, KubeRuntime, Runtime, RuntimeError};
use coding_swarm::spec::ErrorClass;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::kube::{cfg, created, launch, next};
use crate::kubeapi::ApiServer;

async fn runtime_with(
    server: &ApiServer,
    tune: impl FnOnce(&mut KubernetesConfig),
) -> (KubeRuntime, mpsc::UnboundedReceiver<Completion>) {
    let mut c = cfg(&server.url);
    tune(&mut c);
    let (tx, rx) = mpsc::unbounded_channel();
    (KubeRuntime::connect(&c, tx).await.unwrap(), rx)
}

/// A container waiting, as the kubelet reports it.
fn waiting(name: &str, reason: &str, message: &str) -> Value {
    json!({"name": name, "ready": false, "restartCount": 0, "image": "registry.example.com/coding-swarm-worker:1.0", "imageID": "",
        "state": {"waiting": {"reason": reason, "message": message}}, "lastState": {}})
}

/// The worker pod's status with its init containers `checkout` and `agent` and its main
/// container `worker`.
fn pod_status(init: Vec<Value>, main: Vec<Value>) -> Value {
    json!({"phase": "Pending", "startTime": "2026-11-26T09:00:00Z", "initContainerStatuses": init, "containerStatuses": main})
}

/// Waits until the runtime has listed the engine's pods `n` times after `after` (each sweep
/// lists them once, after reading the tracked Jobs).
async fn pod_sweeps(server: &ApiServer, after: Instant, n: usize) {
    let start = Instant::now();
    loop {
        let seen = server
            .api
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path.contains("/pods?")
                    && r.path.contains("managed-by")
                    && !r.path.contains("watch=")
                    && r.at > after
            })
            .count();
        if seen >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {seen} pod sweeps"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deletes(server: &ApiServer, name: &str) -> Vec<Value> {
    server
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains(&format!("/jobs/{name}")))
        .map(|r| r.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_pull_its_image_fails_the_run_after_the_start_timeout() {
    let server = ApiServer::start().await;
    let timeout = Duration::from_secs(1);
    let (rt, mut rx) = runtime_with(&server, |c| c.start_timeout = timeout).await;
    let launched = Instant::now();
    rt.launch(launch("run-pull", 600)).await.unwrap();
    rt.launch(launch("run-started", 600)).await.unwrap();
    // The first init container cannot pull the image; the others wait behind it.
    let pull = "Back-off pulling image \"registry.example.com/coding-swarm-worker:1.0\": ErrImagePull: not found";
    server.api.report_pod(
        "run-pull",
        pod_status(
            vec![
                waiting("checkout", "ImagePullBackOff", pull),
                waiting("agent", "PodInitializing", ""),
            ],
            vec![waiting("worker", "PodInitializing", "")],
        ),
    );
    // This one started: its checkout is done and its agent runs.
    server.api.report_pod(
        "run-started",
        json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "checkout", "ready": true, "restartCount": 0, "image": "w", "imageID": "sha256:1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "agent", "ready": false, "restartCount": 0, "image": "w", "imageID": "sha256:1", "state": {"running": {"startedAt": "2026-11-26T09:00:00Z"}}}],
            "containerStatuses": [waiting("worker", "PodInitializing", "")]}),
    );
    let c = next(&mut rx).await;
    assert_eq!(c.run_name, "run-pull");
    assert!(
        launched.elapsed() >= timeout,
        "not before the start timeout"
    );
    assert_eq!(c.result.error_class, Some(ErrorClass::Infrastructure));
    let error = c.result.error.clone().unwrap();
    for part in ["checkout", "ImagePullBackOff", pull, "run-pull"] {
        assert!(error.contains(part), "{part:?} in {error}");
    }
    // Its Job went the way a stopped run's goes: in the foreground, pods first.
    assert!(server.api.job("run-pull").is_none(), "the Job is deleted");
    assert_eq!(
        deletes(&server, "run-pull")[0]["propagationPolicy"],
        "Foreground"
    );
    // The started run is untouched, past the timeout and another sweep.
    pod_sweeps(&server, Instant::now(), 1).await;
    assert!(rt.is_tracked("run-started"));
    assert!(server.api.job("run-started").is_some());
    assert!(deletes(&server, "run-started").is_empty());
    assert!(rx.try_recv().is_err(), "no other run ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_the_run_at_once_and_a_pull_within_the_timeout_is_left_alone() {
    let server = ApiServer::start().await;
    // A start timeout no test outlives: what ends a run here ends it at once.
    let (rt, mut rx) = runtime_with(&server, |c| c.start_timeout = Duration::from_secs(3600)).await;
    rt.launch(launch("run-no-secret", 600)).await.unwrap();
    rt.launch(launch("run-pulling", 600)).await.unwrap();
    let missing = "secret \"coding-swarm-secrets\" not found";
    server.api.report_pod(
        "run-no-secret",
        pod_status(
            vec![
                json!({"name": "checkout", "ready": true, "restartCount": 0, "image": "w", "imageID": "sha256:1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}),
                waiting("agent", "CreateContainerConfigError", missing),
            ],
            vec![waiting("worker", "PodInitializing", "")],
        ),
    );
    server.api.report_pod(
        "run-pulling",
        pod_status(
            vec![waiting(
                "checkout",
                "ErrImagePull",
                "rpc error: code = Unknown desc = failed to pull and unpack image: i/o timeout",
            )],
            vec![waiting("worker", "PodInitializing", "")],
        ),
    );
    let c = next(&mut rx).await;
    assert_eq!(c.run_name, "run-no-secret");
    assert_eq!(c.result.error_class, Some(ErrorClass::Infrastructure));
    let error = c.result.error.unwrap();
    for part in ["agent", "CreateContainerConfigError", missing] {
        assert!(error.contains(part), "{part:?} in {error}");
    }
    assert!(server.api.job("run-no-secret").is_none());
    // The other one pulls (slowly) within its timeout: two more sweeps see it and leave it.
    pod_sweeps(&server, Instant::now(), 2).await;
    assert!(rt.is_tracked("run-pulling"));
    assert!(server.api.job("run-pulling").is_some());
    assert!(deletes(&server, "run-pulling").is_empty());
    assert!(rx.try_recv().is_err());
}

fn job_posts(server: &ApiServer, name: &str) -> Vec<Instant> {
    server
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.body["kind"] == "Job" && r.body["metadata"]["name"] == name
        })
        .map(|r| r.at)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_costs_a_bounded_number_of_requests() {
    let server = ApiServer::start().await;
    let (rt, _rx) = runtime_with(&server, |_| {}).await;
    // A storm that ends: three refusals, then the create goes through.
    server.api.fail_next_creates(&[429, 429, 429]);
    rt.launch(launch("run-after-storm", 600)).await.unwrap();
    created(&server, "run-after-storm").await;
    let posts = job_posts(&server, "run-after-storm");
    assert_eq!(posts.len(), 4, "three refusals, then the create");
    // Each refusal said `Retry-After: 1`, longer than the first backoff: it was honoured.
    for pair in posts.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(1),
            "{:?}",
            pair[1] - pair[0]
        );
    }

    // A storm that goes on: the launch fails, clearly, after a bounded number of requests.
    server.api.fail_next_creates(&[429; 100]);
    let err = rt
        .launch(launch("run-in-storm", 600))
        .await
        .expect_err("the storm goes on");
    server.api.clear_create_errors();
    assert!(matches!(err, RuntimeError::Kube { .. }), "{err}");
    let text = coding_swarm::display::error_chain(&err);
    assert!(
        text.contains("create Job run-in-storm") && text.contains("too many requests"),
        "{text}"
    );
    assert_eq!(
        job_posts(&server, "run-in-storm").len(),
        KUBE_TRIES as usize,
        "one policy: no retries of retries"
    );
    assert!(!rt.is_tracked("run-in-storm"));
    assert!(server.api.job("run-in-storm").is_none());
}
