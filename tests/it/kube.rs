//! The Kubernetes runtime with the real kube client against the API at the HTTP level: the Job
//! it builds (every security field, no literal secret), create (201), already exists (409,
//! adopted), a watch that ends in Complete, in Failed with DeadlineExceeded, with an OOM-killed
//! pod, an eviction and a deletion; the termination message as the result; 403 as a clear
//! error; 429 and 500 retried; stop; logs; the client's rate limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use coding_swarm::config::{AgentProfile, KubernetesConfig};
use coding_swarm::job::JobSpec;
use coding_swarm::runtime::kubernetes::{
    build_job, build_task_config_map, classify_job, pod_alive,
};
use coding_swarm::runtime::{Completion, KubeRuntime, Launch, Runtime, RuntimeError};
use coding_swarm::spec::{ErrorClass, RunResult};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::json;
use tokio::sync::mpsc;

use crate::kubeapi::{complete, failed, pod_terminated, ApiServer, NS};

pub(crate) fn cfg(url: &str) -> KubernetesConfig {
    let mut c: KubernetesConfig = toml::from_str(&format!(
        r#"
namespace = "{NS}"
image = "registry.example.com/coding-swarm-worker:1.0"
ttl_seconds_after_finished = 600
requests_per_second = 50
node_selector = {{ pool = "agents" }}
tolerations = [{{ key = "dedicated", operator = "Equal", value = "agents", effect = "NoSchedule" }}]
[resources.requests]
cpu = "500m"
memory = "1Gi"
[resources.limits]
memory = "4Gi"
"#
    ))
    .unwrap();
    c.api_url = Some(url.to_string());
    c
}

pub(crate) fn launch(name: &str, timeout_secs: i64) -> Launch {
    let mut agent = AgentProfile::default_claude();
    agent.env = BTreeMap::from([(
        "CLAUDE_CODE_OAUTH_TOKEN".into(),
        "${CLAUDE_CODE_OAUTH_TOKEN}".into(),
    )]);
    Launch {
        adopt_only: false,
        git_token: None,
        task_id: 42,
        attempt: 1,
        run_name: name.into(),
        deadline: Utc::now() + chrono::Duration::seconds(timeout_secs),
        task: JobSpec {
            version: coding_swarm::job::VERSION,
            project: "webapp".into(),
            key: "login-form".into(),
            generation: 2,
            attempt: 1,
            run_name: name.into(),
            repo: "https://github.com/example/webapp.git".into(),
            branch: "swarm/login-form".into(),
            base: "main".into(),
            kind: Some("implement".into()),
            prompt: "Build the login form.".into(),
            agent_name: "claude".into(),
            agent: (&agent).into(),
            git_name: "swarm".into(),
            git_email: "swarm@example.com".into(),
            hooks: None,
        },
    }
}

pub(crate) async fn runtime(
    server: &ApiServer,
) -> (KubeRuntime, mpsc::UnboundedReceiver<Completion>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        KubeRuntime::connect(&cfg(&server.url), tx).await.unwrap(),
        rx,
    )
}

pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<Completion>) -> Completion {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a completion")
        .expect("open")
}

pub(crate) async fn created(server: &ApiServer, name: &str) {
    let start = Instant::now();
    while server.api.job(name).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job {name} never created"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_job_is_locked_down_and_carries_no_secret() {
    let job: Job = build_job(
        &launch("webapp-login-form-1a2b3c4d-g2-a1", 1800),
        &cfg("http://unused"),
    );
    let text = serde_json::to_string(&job).unwrap();
    assert!(!text.contains("DATABASE_URL"));
    let meta = &job.metadata;
    assert_eq!(
        meta.name.as_deref(),
        Some("webapp-login-form-1a2b3c4d-g2-a1")
    );
    let labels = meta.labels.as_ref().unwrap();
    for (k, v) in [
        ("app.kubernetes.io/managed-by", "coding-swarm"),
        ("coding-swarm/project", "webapp"),
        ("coding-swarm/task", "login-form"),
        ("coding-swarm/generation", "2"),
        ("coding-swarm/attempt", "1"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert!((1790..=1800).contains(&spec.active_deadline_seconds.unwrap()));
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.run_as_non_root),
        (Some(1000), Some(1000), Some(true))
    );
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(
        pod.node_selector
            .as_ref()
            .unwrap()
            .get("pool")
            .map(String::as_str),
        Some("agents")
    );
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert!(pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .any(|v| v.name == "workspace" && v.empty_dir.is_some()));
    // Three containers of one image, each locked down: the checkout and the agent run first
    // (init containers, in that order), the push last.
    let inits = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = inits
        .iter()
        .chain(&pod.containers)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["checkout", "agent", "worker"]);
    for c in inits.iter().chain(&pod.containers) {
        assert_eq!(
            c.image.as_deref(),
            Some("registry.example.com/coding-swarm-worker:1.0")
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (
                sc.run_as_user,
                sc.run_as_group,
                sc.run_as_non_root,
                sc.allow_privilege_escalation
            ),
            (Some(1000), Some(1000), Some(true), Some(false)),
            "{}",
            c.name
        );
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        // Secrets only by reference, key by key; the one plain value is HOME. The engine's
        // environment never reaches the Job.
        assert!(c.env_from.is_none(), "{}: no whole Secret", c.name);
        for e in c.env.iter().flatten() {
            match &e.value_from {
                Some(from) => assert_eq!(
                    from.secret_key_ref.as_ref().unwrap().name,
                    "coding-swarm-secrets"
                ),
                None => assert_eq!(e.name, "HOME", "{}", c.name),
            }
        }
        // The task comes from the run's own ConfigMap, mounted read-only.
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "task")
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        assert!(c
            .args
            .as_ref()
            .unwrap()
            .join(" ")
            .contains(&format!("--task-file {}/task.json", mount.mount_path)));
    }
    let c = &pod.containers[0];
    let task_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "task")
        .unwrap();
    assert_eq!(
        task_volume.config_map.as_ref().unwrap().name,
        "webapp-login-form-1a2b3c4d-g2-a1"
    );
    let map = build_task_config_map(
        &launch("webapp-login-form-1a2b3c4d-g2-a1", 1800),
        &cfg("http://unused"),
        "uid-1",
    );
    assert!(
        map.data.as_ref().unwrap()["task.json"].contains("${CLAUDE_CODE_OAUTH_TOKEN}"),
        "the task names the secret, it does not hold it"
    );
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert!(c
        .args
        .as_ref()
        .unwrap()
        .join(" ")
        .contains("--termination-log /dev/termination-log"));
}

/// What of the git credential a container of a worker pod has: (an environment variable
/// that holds or names it, a mount of the run's token Secret, the checkout's state).
fn git_access(c: &Container) -> (Vec<String>, bool, bool) {
    let env: Vec<String> = c
        .env
        .iter()
        .flatten()
        .filter(|e| {
            let key = e
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
                .map(|r| r.key.as_str());
            ["SWARM_GIT_TOKEN", "GITHUB_TOKEN", "SWARM_GIT_TOKEN_FILE"].contains(&e.name.as_str())
                || key.is_some_and(|k| k == "SWARM_GIT_TOKEN" || k == "GITHUB_TOKEN")
        })
        .map(|e| e.name.clone())
        .collect();
    let mounts = c.volume_mounts.iter().flatten();
    let token_mount = mounts.clone().any(|m| m.name == "git-token");
    let state_mount = mounts.clone().any(|m| m.name == "state");
    (env, token_mount, state_mount)
}

/// The Job of a run, checked container by container: the agent's holds no git credential in
/// its environment or its mounts (nor a whole Secret, nor the checkout's state); the checkout
/// and push containers, which the agent cannot reach, hold it. `minted`: the run has a token
/// of its own, mounted from the run's Secret.
fn assert_agent_has_no_git_credential(job: &Job, minted: bool) {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let all: Vec<&Container> = pod
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .collect();
    assert_eq!(all.len(), 3);
    for c in all {
        let (env, token_mount, state_mount) = git_access(c);
        assert!(c.env_from.is_none(), "{}: no whole Secret", c.name);
        match c.name.as_str() {
            "agent" => {
                assert!(env.is_empty(), "the agent's container has {env:?}");
                assert!(
                    !token_mount && !state_mount,
                    "the agent's container mounts too much"
                );
                // It has the model's credential, by key.
                assert!(c
                    .env
                    .iter()
                    .flatten()
                    .any(|e| e.name == "CLAUDE_CODE_OAUTH_TOKEN"
                        && e.value_from
                            .as_ref()
                            .unwrap()
                            .secret_key_ref
                            .as_ref()
                            .unwrap()
                            .key
                            == "CLAUDE_CODE_OAUTH_TOKEN"));
            }
            "checkout" | "worker" => {
                assert!(state_mount, "{}", c.name);
                if minted {
                    assert_eq!(env, ["SWARM_GIT_TOKEN_FILE"], "{}", c.name);
                    assert!(token_mount, "{}", c.name);
                } else {
                    assert_eq!(env, ["SWARM_GIT_TOKEN", "GITHUB_TOKEN"], "{}", c.name);
                    assert!(!token_mount, "{}", c.name);
                }
            }
            other => panic!("unexpected container {other}"),
        }
    }
    // The agent's container runs after the checkout and before the push.
    let order: Vec<&str> = pod
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(order, ["checkout", "agent"]);
}

#[test]
fn the_agents_container_holds_no_git_credential() {
    let job = build_job(
        &launch("webapp-login-form-1a2b3c4d-g2-a1", 1800),
        &cfg("http://unused"),
    );
    assert_agent_has_no_git_credential(&job, false);
    // A profile that names other variables gets them, and still no git credential.
    let mut l = launch("webapp-login-form-1a2b3c4d-g2-a1", 1800);
    l.task
        .agent
        .env
        .insert("NPM_TOKEN".into(), "${NPM_TOKEN}".into());
    let job = build_job(&l, &cfg("http://unused"));
    assert_agent_has_no_git_credential(&job, false);
    let pod = job.spec.unwrap().template.spec.unwrap();
    let agent = &pod.init_containers.as_ref().unwrap()[1];
    assert!(agent.env.iter().flatten().any(|e| e.name == "NPM_TOKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_for_the_job_is_in_a_secret_of_its_own_that_the_agent_cannot_mount() {
    let server = ApiServer::start().await;
    let (rt, _rx) = runtime(&server).await;
    let name = "webapp-login-form-1a2b3c4d-g2-a1";
    let token = "ghs_mintedForOneJobOnly0123456789abcdef";
    let mut l = launch(name, 600);
    l.git_token = coding_swarm::config::Secret::new(token);
    rt.launch(l).await.unwrap();
    let job_json = server.api.job(name).unwrap();
    assert!(
        !job_json.to_string().contains(token),
        "the token is not in the Job"
    );
    let job: Job = serde_json::from_value(job_json.clone()).unwrap();
    assert_agent_has_no_git_credential(&job, true);
    // The run's Secret: the token, owned by the Job (deleted with it).
    let secret = server.api.secret(name).expect("the run's Secret");
    use base64::Engine as _;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(stored, token.as_bytes());
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        job_json["metadata"]["uid"]
    );
    let pod = job.spec.unwrap().template.spec.unwrap();
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "git-token")
        .unwrap();
    assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some(name));
    // Renewed in place: the kubelet updates the mounted file, which the push reads.
    let renewed = "ghs_renewedForTheSameJob0123456789abcdef";
    rt.renew_git_token(name, &coding_swarm::config::Secret::new(renewed).unwrap())
        .await
        .unwrap();
    let stored = base64::engine::general_purpose::STANDARD
        .decode(
            server.api.secret(name).unwrap()["data"]["token"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(stored, renewed.as_bytes());
    rt.stop(name).await;
    server.api.delete_job(name);
    assert!(server.api.secret(name).is_none(), "collected with its Job");
}

#[test]
fn an_init_container_that_ends_badly_is_the_runs_result() {
    let job: Job = build_job(
        &launch("webapp-login-form-1a2b3c4d-g2-a1", 1800),
        &cfg("http://unused"),
    );
    let pod = |status: serde_json::Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    };
    // While the agent (an init container) runs, the pod is Pending and alive.
    let running = pod(json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "checkout", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "agent", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
         "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}));
    assert!(pod_alive(&running));
    let oom = pod(json!({"phase": "Failed", "initContainerStatuses": [
        {"name": "checkout", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "agent", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
         "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
    assert!(!pod_alive(&oom));
    let mut failed_job = job.clone();
    failed_job.status = serde_json::from_value(failed(
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    ))
    .unwrap();
    let r = classify_job(&failed_job, &[oom], false);
    assert_eq!(r.error_class, Some(ErrorClass::Infrastructure));
    let error = r.error.unwrap();
    assert!(
        error.contains("agent container") && error.contains("137"),
        "{error}"
    );
    let crashed = pod(json!({"phase": "Failed", "initContainerStatuses": [
        {"name": "checkout", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
         "state": {"terminated": {"exitCode": 101, "reason": "Error"}}}]}));
    let r = classify_job(&failed_job, &[crashed], false);
    assert_eq!(r.error_class, Some(ErrorClass::Crash));
    assert!(r.error.unwrap().contains("checkout container"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completion_and_its_termination_message_is_the_result() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    rt.ready().await.unwrap();
    let name = "webapp-login-form-1a2b3c4d-g2-a1";
    rt.launch(launch(name, 600)).await.unwrap();
    assert!(rt.is_tracked(name));
    let posted = server
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(posted.body["spec"]["backoffLimit"], json!(0));
    let result = RunResult {
        success: true,
        summary: Some("Built the login form.".into()),
        cost_usd: Some(0.42),
        turns: Some(7),
        ..RunResult::default()
    };
    let message = serde_json::to_string(&result).unwrap();
    server.api.finish(
        name,
        complete(),
        pod_terminated(0, "Completed", Some(&message)),
    );
    let c = next(&mut rx).await;
    assert_eq!((c.task_id, c.attempt, c.run_name.as_str()), (42, 1, name));
    assert_eq!(c.result, result);
    assert!(!rt.is_tracked(name));
    // The run's log is its containers' logs in the order they ran; a container that never
    // started adds nothing.
    let pod = format!("{name}-x7k2p");
    server
        .api
        .set_container_log(&pod, "checkout", "checkout starts\n");
    assert_eq!(rt.logs(name).await.unwrap(), "checkout starts\n");
    server
        .api
        .set_container_log(&pod, "agent", "agent starts\n");
    server.api.set_log(&pod, "run succeeded\n");
    assert_eq!(
        rt.logs(name).await.unwrap(),
        "checkout starts\nagent starts\nrun succeeded\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_map_to_result_classes() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    let cases = [
        (
            "run-deadline",
            failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
            json!({"phase": "Failed"}),
            ErrorClass::Timeout,
        ),
        (
            "run-oom",
            failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            pod_terminated(137, "OOMKilled", None),
            ErrorClass::Infrastructure,
        ),
        (
            "run-evicted",
            failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
            ErrorClass::Infrastructure,
        ),
        (
            "run-crash",
            failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            pod_terminated(101, "Error", None),
            ErrorClass::Crash,
        ),
        (
            "run-image",
            failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
            json!({"phase": "Pending", "containerStatuses": [{"name": "worker", "ready": false, "restartCount": 0, "image": "coding-swarm-worker:test", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"coding-swarm-worker:test\""}}}]}),
            ErrorClass::Infrastructure,
        ),
    ];
    for (name, job_status, pod_status, class) in cases {
        rt.launch(launch(name, 600)).await.unwrap();
        server.api.finish(name, job_status, pod_status);
        let c = next(&mut rx).await;
        assert_eq!(c.run_name, name);
        assert_eq!(c.result.error_class, Some(class), "{name}: {:?}", c.result);
        if name == "run-oom" {
            assert!(
                c.result.error.as_deref().unwrap().contains("OOM"),
                "{:?}",
                c.result
            );
        }
        if name == "run-image" {
            assert!(
                c.result.error.as_deref().unwrap().contains("pull"),
                "{:?}",
                c.result
            );
        }
    }
    // An agent failure is the worker's own result, carried in the termination message.
    let agent_failure = RunResult::failure(ErrorClass::Agent, "tests failed");
    rt.launch(launch("run-agent", 600)).await.unwrap();
    server.api.finish(
        "run-agent",
        failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
        pod_terminated(
            2,
            "Error",
            Some(&serde_json::to_string(&agent_failure).unwrap()),
        ),
    );
    assert_eq!(next(&mut rx).await.result, agent_failure);
    // Deleted by someone else.
    rt.launch(launch("run-deleted", 600)).await.unwrap();
    server.api.delete_job("run-deleted");
    let c = next(&mut rx).await;
    assert_eq!(c.result.error_class, Some(ErrorClass::Infrastructure));
    assert!(c.result.error.unwrap().contains("deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_job_is_adopted_after_a_restart() {
    let server = ApiServer::start().await;
    // An earlier engine created this Job, then died.
    let earlier =
        serde_json::to_value(build_job(&launch("run-adopted", 600), &cfg(&server.url))).unwrap();
    server.api.insert_job(earlier);
    let (rt, mut rx) = runtime(&server).await;
    rt.launch(launch("run-adopted", 600)).await.unwrap();
    assert!(rt.is_tracked("run-adopted"), "adopted, not failed");
    assert_eq!(
        server
            .api
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("/jobs"))
            .count(),
        1,
        "one create, answered 409"
    );
    assert!(
        server.api.config_map("run-adopted").is_some(),
        "the adopted Job gets its task"
    );
    let done = RunResult {
        success: true,
        summary: Some("finished while adopted".into()),
        ..RunResult::default()
    };
    server.api.finish(
        "run-adopted",
        complete(),
        pod_terminated(0, "Completed", Some(&serde_json::to_string(&done).unwrap())),
    );
    assert_eq!(next(&mut rx).await.result, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_clear_and_throttling_is_retried() {
    let server = ApiServer::start().await;
    let (rt, _rx) = runtime(&server).await;
    server.api.fail_next_creates(&[403]);
    let err = rt.launch(launch("run-forbidden", 600)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Forbidden { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("cannot create resource \"jobs\"") && text.contains("deploy/base/role.yaml"),
        "{text}"
    );
    // The file the message names is there.
    assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/base/role.yaml")
        .is_file());
    assert!(!rt.is_tracked("run-forbidden"));

    // A Job whose task cannot be stored does not stay behind waiting for it.
    server.api.fail_next_config_map_creates(&[403]);
    let err = rt.launch(launch("run-no-task", 600)).await.unwrap_err();
    assert!(err.to_string().contains("configmaps"), "{err}");
    assert!(
        server.api.job("run-no-task").is_none(),
        "the Job was deleted"
    );
    assert!(!rt.is_tracked("run-no-task"));

    server.api.fail_next_creates(&[429, 500, 503]);
    rt.launch(launch("run-retried", 600)).await.unwrap();
    created(&server, "run-retried").await;
    let posts = server
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.body["kind"] == "Job"
                && r.body["metadata"]["name"] == "run-retried"
        })
        .count();
    assert_eq!(posts, 4, "three refusals, then the create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_deletes_the_job_with_its_pods() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    rt.launch(launch("run-stopped", 600)).await.unwrap();
    rt.stop("run-stopped").await;
    let c = next(&mut rx).await;
    assert_eq!(c.result.error_class, Some(ErrorClass::Cancelled));
    let delete = server
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("a DELETE");
    assert!(delete.path.contains("/jobs/run-stopped"));
    assert_eq!(
        delete.body["propagationPolicy"],
        json!("Foreground"),
        "pods go with the Job, before it: {:?}",
        delete.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_rate_limited() {
    let server = ApiServer::start().await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut c = cfg(&server.url);
    c.requests_per_second = 2;
    let rt = KubeRuntime::connect(&c, tx).await.unwrap();
    let start = Instant::now();
    let launches: Vec<_> = (0..6)
        .map(|i| rt.launch(launch(&format!("run-burst-{i}"), 600)))
        .collect();
    for r in futures::future::join_all(launches).await {
        r.unwrap();
    }
    // Six creates (plus the watch's list) at two per second need at least two more windows.
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_run_whose_job_is_gone_is_lost_not_started_again() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    let mut l = launch("run-vanished", 600);
    l.adopt_only = true;
    rt.launch(l).await.unwrap();
    let c = next(&mut rx).await;
    assert_eq!(c.result.error_class, Some(ErrorClass::Infrastructure));
    assert!(c.result.error.unwrap().contains("gone"));
    assert_eq!(
        server
            .api
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        0,
        "never created again"
    );
    // One that still exists is adopted.
    server.api.insert_job(
        serde_json::to_value(build_job(
            &launch("run-still-there", 600),
            &cfg(&server.url),
        ))
        .unwrap(),
    );
    let mut l = launch("run-still-there", 600);
    l.adopt_only = true;
    rt.launch(l).await.unwrap();
    assert!(rt.is_tracked("run-still-there"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_ends_only_once_its_pod_is_gone() {
    let server = ApiServer::start().await;
    // Like a kubelet stopping a container: the pod takes a while after the deletion.
    server.api.set_pod_linger(Duration::from_secs(3));
    let (rt, mut rx) = runtime(&server).await;
    let name = "run-stopped-pod";
    rt.launch(launch(name, 600)).await.unwrap();
    server.api.start_pod(name);
    rt.stop(name).await;
    // While the pod exists, the run has not ended: the addressee's next task cannot start
    // (the engine launches it only after this completion).
    let early = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert!(early.is_err(), "ended while its pod runs: {early:?}");
    let pod = server
        .api
        .pod(&format!("{name}-x7k2p"))
        .expect("the pod is still there");
    assert!(!pod["metadata"]["deletionTimestamp"].is_null());
    let job = server.api.job(name).expect("the Job waits for its pod");
    assert_eq!(job["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    let c = next(&mut rx).await;
    assert_eq!(c.run_name, name);
    assert_eq!(c.result.error_class, Some(ErrorClass::Cancelled));
    assert!(
        server.api.pod(&format!("{name}-x7k2p")).is_none(),
        "reported after the pod went"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_run_ends_only_once_its_pod_has_stopped() {
    let server = ApiServer::start().await;
    let (rt, mut rx) = runtime(&server).await;
    let name = "run-deadline-pod";
    rt.launch(launch(name, 600)).await.unwrap();
    server.api.start_pod(name);
    // The Job controller marks the Job failed at its deadline while the pod is still stopping.
    let running = json!({"phase": "Running", "startTime": "2026-11-26T09:00:00Z",
        "containerStatuses": [{"name": "worker", "ready": true, "restartCount": 0, "image": "coding-swarm-worker:test", "imageID": "",
            "state": {"running": {"startedAt": "2026-11-26T09:00:00Z"}}}]});
    server.api.finish(
        name,
        failed(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ),
        running,
    );
    let early = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert!(early.is_err(), "ended while its pod runs: {early:?}");
    server.api.finish(
        name,
        failed(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ),
        // The kubelet's SIGTERM stopped the worker, which says so; the run still timed out.
        pod_terminated(
            2,
            "Error",
            Some(
                &serde_json::to_string(&RunResult::failure(ErrorClass::Cancelled, "stopped"))
                    .unwrap(),
            ),
        ),
    );
    let c = next(&mut rx).await;
    assert_eq!(
        c.result.error_class,
        Some(ErrorClass::Timeout),
        "{:?}",
        c.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_any_valid_size_reaches_the_pod_in_its_own_config_map() {
    let server = ApiServer::start().await;
    let (rt, _rx) = runtime(&server).await;
    let name = "run-large-task";
    let mut l = launch(name, 600);
    // At the validator's limit, in characters of two and three bytes: far beyond the 128 KiB
    // one environment variable may have, within the 1 MiB of a ConfigMap.
    l.task.prompt = "é€".repeat(coding_swarm::spec::Prompt::MAX_CHARS / 2);
    rt.launch(l.clone()).await.unwrap();
    let job = server.api.job(name).unwrap();
    let text = job.to_string();
    assert!(
        text.len() < 16 * 1024,
        "the task is not in the Job: {} bytes",
        text.len()
    );
    let map = server.api.config_map(name).expect("the run's ConfigMap");
    let task = JobSpec::from_json(map["data"]["task.json"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(task, l.task, "the whole task");
    let owner = &map["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Job"), Some(name))
    );
    assert_eq!(owner["uid"], job["metadata"]["uid"], "owned by the Job");
    let volumes = &job["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == name),
        "{volumes}"
    );
    // It goes with its Job.
    server.api.delete_job(name);
    assert!(
        server.api.config_map(name).is_none(),
        "collected with the Job"
    );

    // The fake refuses what the API server refuses: a ConfigMap over 1 MiB.
    let client = kube::Client::try_from(kube::Config::new(server.url.parse().unwrap())).unwrap();
    let maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, crate::kubeapi::NS);
    let mut big = build_task_config_map(&launch("run-too-big", 600), &cfg(&server.url), "uid-x");
    big.data = Some(BTreeMap::from([(
        "task.json".to_string(),
        "x".repeat(1024 * 1024 + 1),
    )]));
    match maps.create(&Default::default(), &big).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{s:?}"),
        other => panic!("a ConfigMap over 1 MiB was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addressees_next_task_waits_until_the_stopped_pod_is_gone() {
    use coding_swarm::store::TaskFilter;
    let server = ApiServer::start().await;
    server.api.set_pod_linger(Duration::from_secs(3));
    let db = crate::support::TestDb::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let repo = crate::support::TestRepo::new();
    repo.commit(
        &[
            (
                ".ai/tasks/01-first.yaml",
                Some("addressee: worker-x\nprompt: first\n"),
            ),
            (
                ".ai/tasks/02-second.yaml",
                Some("addressee: worker-x\nprompt: second\n"),
            ),
        ],
        "two tasks for one addressee",
    );
    let config = crate::support::config(data.path(), &db, &repo, "true", "");
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = KubeRuntime::connect(&cfg(&server.url), tx).await.unwrap();
    let mut engine =
        coding_swarm::engine::Engine::with_runtime(config.clone(), db.store.clone(), rt, rx);
    coding_swarm::sync::sync_project(
        &db.store,
        &config.data_dir,
        &config.projects[0],
        &coding_swarm::gitops::GitAuth::new(None),
    )
    .await
    .unwrap();
    engine.reconcile().await.unwrap();
    let first = server.api.job_names();
    assert_eq!(
        first.len(),
        1,
        "one task of the addressee at a time: {first:?}"
    );
    let first = first[0].clone();
    assert!(first.contains("01-first"), "{first}");
    server.api.start_pod(&first);
    coding_swarm::steer::stop(&db.store, "proj", "01-first", "test")
        .await
        .unwrap();
    let pod = format!("{first}-x7k2p");
    let start = Instant::now();
    let second = loop {
        engine.reconcile().await.unwrap();
        let jobs = server.api.job_names();
        if let Some(second) = jobs.iter().find(|j| j.contains("02-second")) {
            break second.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the next task never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        server.api.pod(&pod).is_none(),
        "{second} was launched while the stopped pod still existed"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let tasks = db.store.list(&TaskFilter::default()).await.unwrap();
    let stopped = tasks.iter().find(|t| t.key == "01-first").unwrap();
    assert_eq!(
        stopped.result().unwrap().error_class,
        Some(ErrorClass::Cancelled)
    );
}

/// README section 7, "The transcript": on Kubernetes, a running pod's log is followed
/// (`follow=true`), container after container, into one buffer its readers share: a reader
/// that polls it every 20 ms asks the API server for no log again; lines show as the containers
/// write them, a container that has not started is asked for again each second, and the run's
/// whole log is there in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pods_log_is_followed_not_polled() {
    let server = ApiServer::start().await;
    let (rt, _rx) = runtime(&server).await;
    let name = "webapp-login-form-1a2b3c4d-g2-a1";
    rt.launch(launch(name, 600)).await.unwrap();
    created(&server, name).await;
    server.api.start_pod(name);
    let pod = format!("{name}-x7k2p");
    server
        .api
        .append_container_log(&pod, "checkout", "cloned\n");
    server.api.end_container_log(&pod, "checkout");
    let mut offset = 0;
    let mut got = String::new();
    let mut reads = 0;
    let mut read_until = async |want: &str| {
        let start = Instant::now();
        loop {
            let r = rt.read_log(name, offset).await.unwrap();
            reads += 1;
            assert!(!r.restarted);
            got.push_str(&r.text);
            offset = r.next;
            if got.contains(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {want:?} in {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    read_until("cloned\n").await;
    server
        .api
        .append_container_log(&pod, "agent", "{\"type\":\"system\"}\n");
    read_until("system").await;
    server.api.append_container_log(&pod, "agent", "line tw");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.api.append_container_log(&pod, "agent", "o\n");
    read_until("line two\n").await;
    server.api.end_container_log(&pod, "agent");
    server.api.set_log(&pod, "pushed\n");
    read_until("pushed\n").await;
    assert_eq!(got, "cloned\n{\"type\":\"system\"}\nline two\npushed\n");
    let log_requests: Vec<String> = server
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/log?"))
        .map(|r| r.path)
        .collect();
    assert!(
        log_requests.iter().all(|p| p.contains("follow=true")),
        "{log_requests:?}"
    );
    assert!(
        log_requests.len() <= 8 && reads > 20,
        "{} reads, {} log requests: {log_requests:?}",
        reads,
        log_requests.len()
    );
}
