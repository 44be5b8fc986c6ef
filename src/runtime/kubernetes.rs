//! The `kubernetes` runtime: one Job per run, with its task in a ConfigMap the Job owns, built
//! here (pure: [`build_job`], [`build_task_config_map`]) and created
//! through a rate-limited kube client; a watch on the engine's Jobs turns their ends into
//! results, from the worker's termination message or, when there is none, from what
//! Kubernetes says went wrong (deadline, OOM kill, eviction, image pull, deletion).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, Secret,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;

use super::{Completion, Launch, Runtime, RuntimeError};
use crate::config::KubernetesConfig;
use crate::spec::{ErrorClass, RunResult};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PROJECT: &str = "coding-swarm/project";
pub const LABEL_TASK: &str = "coding-swarm/task";
pub const LABEL_GENERATION: &str = "coding-swarm/generation";
pub const LABEL_ATTEMPT: &str = "coding-swarm/attempt";
/// Where the worker writes its result for Kubernetes to keep as the termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
const CONTAINER: &str = "worker";
/// How often tracked runs are checked beside the watch.
const SWEEP: Duration = Duration::from_secs(5);
const WORKSPACE: &str = "/workspace";
/// Where the run's ConfigMap (its `task.json`) is mounted, read-only.
pub const TASK_MOUNT: &str = "/etc/coding-swarm/task";

/// A label value: at most 63 characters, alphanumeric at both ends.
fn label_value(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    clean
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn run_labels(t: &crate::job::JobSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), "coding-swarm".to_string()),
        (LABEL_PROJECT.to_string(), label_value(&t.project)),
        (LABEL_TASK.to_string(), label_value(&t.key)),
        (LABEL_GENERATION.to_string(), t.generation.to_string()),
        (LABEL_ATTEMPT.to_string(), t.attempt.to_string()),
    ])
}

/// The run's ConfigMap: its task as `task.json`, mounted into the pod, so a task of any valid
/// size reaches the worker (one environment variable would be limited to 128 KiB). Named like
/// the Job and owned by it, so Kubernetes deletes it with the Job. No secret value is in it:
/// the task carries `${NAME}` references.
pub fn build_task_config_map(launch: &Launch, cfg: &KubernetesConfig, job_uid: &str) -> ConfigMap {
    let t = &launch.task;
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(launch.run_name.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(run_labels(t)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: launch.run_name.clone(),
                uid: job_uid.to_string(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            crate::job::TASK_FILE.to_string(),
            String::from_utf8(t.to_json()).unwrap_or_default(),
        )])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// Where a job's own git token (one the engine minted for it) is mounted, from the run's Secret.
pub const GIT_TOKEN_MOUNT: &str = "/etc/coding-swarm/git";
/// The containers of a worker pod, in the order they run: the clone (with the git
/// credential), the agent (without it: the model's credential only), the commit and push
/// (with it, after the agent's container has ended).
pub const CHECKOUT_CONTAINER: &str = "checkout";
pub const AGENT_CONTAINER: &str = "agent";
/// The last container: its termination message is the run's result.
pub const PUSH_CONTAINER: &str = CONTAINER;
/// Where the checkout container leaves what the push container needs; the agent's container
/// does not mount it.
const STATE: &str = "/state";
/// The workers' Secret's keys that hold a git credential: never given to the agent's container.
pub const GIT_CREDENTIAL_KEYS: &[&str] = &["SWARM_GIT_TOKEN", "GITHUB_TOKEN"];

/// The keys of the workers' Secret the agent's container gets, each by name (not the whole
/// Secret, so a git token kept in the same Secret stays out): what its profile names as
/// `${NAME}`, Claude Code's subscription token, the variables the billing guard looks for,
/// and the proxy and CA variables.
pub fn agent_secret_keys(task: &crate::job::JobSpec) -> Vec<String> {
    let mut keys: Vec<String> = crate::job::referenced_vars(&task.agent.env);
    keys.extend(
        [
            "CLAUDE_CODE_OAUTH_TOKEN",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
        ]
        .iter()
        .chain(crate::job::NETWORK_ENV)
        .map(|k| k.to_string()),
    );
    keys.sort();
    keys.dedup();
    keys.retain(|k| !GIT_CREDENTIAL_KEYS.contains(&k.as_str()) && valid_env_name(k));
    keys
}

/// A name Kubernetes accepts for an environment variable (a C identifier, as the worker's
/// `${NAME}` references are).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn secret_key_env(secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: key.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn plain_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn with<T: Clone>(mut a: Vec<T>, b: &[T]) -> Vec<T> {
    a.extend(b.iter().cloned());
    a
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The run's Secret: the git token the engine minted for this one job (a GitHub App's
/// installation token for the project's repository, `contents: write`), mounted into the
/// checkout and push containers only. Owned by the Job like its ConfigMap.
pub fn build_git_token_secret(
    launch: &Launch,
    cfg: &KubernetesConfig,
    job_uid: &str,
    token: &crate::config::Secret,
) -> Secret {
    let cm = build_task_config_map(launch, cfg, job_uid);
    Secret {
        metadata: cm.metadata,
        string_data: Some(BTreeMap::from([(
            "token".to_string(),
            token.expose().to_string(),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The Job of a run. No secret value is in it: credentials reach the pod only by reference
/// to the workers' Secret (or the run's own Secret of a minted token); the task comes from the
/// run's ConfigMap ([`build_task_config_map`]) and carries `${NAME}` references, not values.
/// The agent's container holds no git credential: see [`CHECKOUT_CONTAINER`].
pub fn build_job(launch: &Launch, cfg: &KubernetesConfig) -> Job {
    let t = &launch.task;
    let labels = run_labels(t);
    let annotations = BTreeMap::from([
        ("coding-swarm/project".to_string(), t.project.clone()),
        ("coding-swarm/task".to_string(), t.key.clone()),
        (
            "coding-swarm/task-id".to_string(),
            launch.task_id.to_string(),
        ),
    ]);
    let timeout = (launch.deadline - chrono::Utc::now()).num_seconds().max(1);
    let minted = launch.git_token.is_some();
    let task_file = format!("{TASK_MOUNT}/{}", crate::job::TASK_FILE);
    let run_dir = format!("{WORKSPACE}/run");
    // The git credential: the run's own token file, else the workers' Secret's keys.
    let git_env: Vec<EnvVar> = if minted {
        vec![plain_env(
            "SWARM_GIT_TOKEN_FILE",
            format!("{GIT_TOKEN_MOUNT}/token"),
        )]
    } else {
        GIT_CREDENTIAL_KEYS
            .iter()
            .map(|k| secret_key_env(&cfg.secret, k))
            .collect()
    };
    let agent_env: Vec<EnvVar> = agent_secret_keys(t)
        .iter()
        .map(|k| secret_key_env(&cfg.secret, k))
        .collect();
    let git_mounts: Vec<VolumeMount> = if minted {
        vec![mount("git-token", GIT_TOKEN_MOUNT, true)]
    } else {
        Vec::new()
    };
    let container = |name: &str, phase: &str, env: Vec<EnvVar>, mounts: Vec<VolumeMount>| {
        // The image's entrypoint is `swarm worker`.
        let mut args = vec![
            "--phase".to_string(),
            phase.into(),
            "--run-dir".into(),
            run_dir.clone(),
            "--task-file".into(),
            task_file.clone(),
        ];
        if phase != "agent" {
            args.extend(["--state-dir".into(), STATE.into()]);
        }
        if name == PUSH_CONTAINER {
            args.extend(["--termination-log".into(), TERMINATION_LOG.into()]);
        }
        Container {
            name: name.into(),
            image: Some(cfg.image.clone()),
            image_pull_policy: cfg.image_pull_policy.clone(),
            args: Some(args),
            env: Some(env),
            resources: cfg.resources.clone(),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                run_as_non_root: Some(true),
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..SecurityContext::default()
            }),
            termination_message_path: Some(TERMINATION_LOG.into()),
            termination_message_policy: Some("File".into()),
            volume_mounts: Some(mounts),
            working_dir: Some(WORKSPACE.into()),
            ..Container::default()
        }
    };
    let base_mounts = || {
        vec![
            mount("workspace", WORKSPACE, false),
            mount("task", TASK_MOUNT, true),
        ]
    };
    let state_home = plain_env("HOME", format!("{STATE}/home"));
    let checkout = container(
        CHECKOUT_CONTAINER,
        "checkout",
        with(vec![state_home.clone()], &git_env),
        with(
            with(base_mounts(), &[mount("state", STATE, false)]),
            &git_mounts,
        ),
    );
    let agent = container(
        AGENT_CONTAINER,
        "agent",
        with(
            vec![plain_env("HOME", format!("{WORKSPACE}/home"))],
            &agent_env,
        ),
        base_mounts(),
    );
    // The push container knows the agent's credentials too, to refuse a commit that holds
    // one; the agent cannot reach this container.
    let push = container(
        PUSH_CONTAINER,
        "push",
        with(with(vec![state_home], &git_env), &agent_env),
        with(
            with(base_mounts(), &[mount("state", STATE, true)]),
            &git_mounts,
        ),
    );
    let mut volumes = vec![
        Volume {
            name: "workspace".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "task".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: launch.run_name.clone(),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if minted {
        // A volume, not an environment variable: the pod waits for the Secret (created right
        // after the Job) as it waits for the ConfigMap, and the kubelet updates the file when
        // the engine renews the token during a long run.
        volumes.push(Volume {
            name: "git-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(launch.run_name.clone()),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    Job {
        metadata: ObjectMeta {
            name: Some(launch.run_name.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(timeout),
            ttl_seconds_after_finished: Some(cfg.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // The pod gets its task, not credentials for the Kubernetes API.
                    automount_service_account_token: Some(false),
                    service_account_name: cfg.service_account.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(1000),
                        run_as_group: Some(1000),
                        fs_group: Some(1000),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    init_containers: Some(vec![checkout, agent]),
                    containers: vec![push],
                    volumes: Some(volumes),
                    node_selector: (!cfg.node_selector.is_empty())
                        .then(|| cfg.node_selector.clone()),
                    tolerations: (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The engine's client for the cluster (in-cluster, kubeconfig, or `api_url`): at most
/// `requests_per_second`, every request under [`KubeRetry`].
pub async fn client(cfg: &KubernetesConfig) -> Result<Client, RuntimeError> {
    let kerr = |what: &str| {
        let what = what.to_string();
        move |source| RuntimeError::Kube { what, source }
    };
    let mut config = match &cfg.api_url {
        Some(url) => kube::Config::new(url.parse().map_err(|e| RuntimeError::Kube {
            what: format!("use api_url {url:?}"),
            source: kube::Error::Service(Box::new(e)),
        })?),
        None => kube::Config::infer()
            .await
            .map_err(|e| RuntimeError::Kube {
                what: "find the cluster (in-cluster or ~/.kube/config)".into(),
                source: kube::Error::Service(Box::new(e)),
            })?,
    };
    config.default_namespace = cfg.namespace.clone();
    // One retry policy, ours: kube's would retry each of our tries again.
    config.default_retry = false;
    let rps = cfg.requests_per_second.max(1);
    // Each try passes the rate limit; the buffer makes the limited service shareable.
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(kerr("build the client"))?
        .with_layer(&tower::limit::RateLimitLayer::new(
            rps,
            Duration::from_secs(1),
        ))
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(KubeRetry::default()))
        .build();
    Ok(client)
}

/// What the engine does with the Kubernetes API in its namespace, as (API group, resource or
/// `resource/subresource`, verbs): Jobs it creates, reads, lists and watches, and deletes (stop,
/// fail fast); each run's ConfigMap it creates; pods it lists (results, fail fast, logs) and
/// their logs it reads. `deploy/base/role.yaml` grants each (a test checks), and `swarm doctor`
/// asks the API server whether the engine may.
pub const ENGINE_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    (
        "batch",
        "jobs",
        &["create", "get", "list", "watch", "delete"],
    ),
    ("", "configmaps", &["create"]),
    // A run's own git token, with a GitHub App: created with its Job, renewed while it runs.
    ("", "secrets", &["create", "patch"]),
    ("", "pods", &["list"]),
    ("", "pods/log", &["get"]),
];

#[derive(Debug, Clone, Copy)]
struct Tracked {
    task_id: i64,
    attempt: i32,
    stop: bool,
    /// When the engine began tracking the run (its launch or adoption): `start_timeout` counts
    /// from here.
    since: std::time::Instant,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, Tracked>,
    /// Jobs seen finished (or deleted) before anyone tracked them: a launch that adopts one
    /// completes at once.
    ended: HashSet<String>,
    /// Runs whose pod cannot start, being deleted: the result each ends with once its Job is
    /// gone.
    failing: HashMap<String, RunResult>,
}

/// Runs jobs as Kubernetes Jobs.
#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    namespace: String,
    cfg: Arc<KubernetesConfig>,
    completions: mpsc::UnboundedSender<Completion>,
    state: Arc<Mutex<State>>,
    /// Logs of running pods followed for the dashboard's readers.
    followed: super::followed::Followed,
}

impl KubeRuntime {
    /// Connects (in-cluster, kubeconfig, or `api_url`) through a client limited to
    /// `requests_per_second`, and starts watching the engine's Jobs.
    pub async fn connect(
        cfg: &KubernetesConfig,
        completions: mpsc::UnboundedSender<Completion>,
    ) -> Result<Self, RuntimeError> {
        let client = client(cfg).await?;
        let rt = Self {
            client,
            namespace: cfg.namespace.clone(),
            cfg: Arc::new(cfg.clone()),
            completions,
            state: Arc::default(),
            followed: Default::default(),
        };
        tokio::spawn(rt.clone().watch());
        tokio::spawn(rt.clone().sweep());
        Ok(rt)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates `object`, which the run's Job owns (one an earlier engine made is fine).
    /// Without it the pod would wait until its deadline: on failure the Job goes, and the
    /// launch fails (the engine tries again).
    async fn create_owned<K>(
        &self,
        run_name: &str,
        what: &str,
        api: Api<K>,
        object: K,
    ) -> Result<(), RuntimeError>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let kind = K::kind(&()).to_string();
        match call(&format!("create {kind} {run_name}"), || {
            let (api, object) = (api.clone(), object.clone());
            async move { api.create(&PostParams::default(), &object).await }
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(RuntimeError::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => Ok(()),
            Err(e) => {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                if let Err(d) = self.jobs().delete(run_name, &dp).await {
                    tracing::warn!(run = %run_name, "cannot delete the Job without {what}: {d}");
                }
                Err(e)
            }
        }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn watch(self) {
        let selector = format!("{MANAGED_BY}=coding-swarm");
        let stream = watcher::watcher(self.jobs(), watcher::Config::default().labels(&selector))
            .default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(job) | Event::InitApply(job)) => self.observe(job).await,
                Ok(Event::Delete(job)) => self.deleted(job).await,
                Ok(_) => {}
                Err(e) => tracing::warn!("watching Jobs: {e}; retrying"),
            }
        }
    }

    /// A backstop for what a watch can miss (a Job deleted or finished while the watch was
    /// relisting): every few seconds, each tracked run's Job is read; a finished one is
    /// completed, a vanished one is reported as stopped or lost.
    async fn sweep(self) {
        loop {
            tokio::time::sleep(SWEEP).await;
            let names: Vec<String> = self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .runs
                .keys()
                .cloned()
                .collect();
            for name in names {
                let got = call(&format!("read Job {name}"), || {
                    let (api, name) = (self.jobs(), name.clone());
                    async move { api.get_opt(&name).await }
                })
                .await;
                match got {
                    Ok(Some(job)) => self.observe(job).await,
                    Ok(None) => {
                        let tracked = self
                            .state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .runs
                            .remove(&name);
                        if let Some(t) = tracked {
                            let result = if let Some(failed) = self.take_failing(&name) {
                                failed
                            } else if t.stop {
                                RunResult::failure(ErrorClass::Cancelled, "the run was stopped")
                            } else {
                                RunResult::failure(
                                    ErrorClass::Infrastructure,
                                    format!("the Job {name} is gone"),
                                )
                            };
                            let _ = self.completions.send(Completion {
                                task_id: t.task_id,
                                attempt: t.attempt,
                                run_name: name,
                                result,
                            });
                        }
                    }
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            self.fail_stuck().await;
        }
    }

    /// Ends the runs whose pod cannot start ([`stuck_container`]): each one's Job is deleted
    /// like a stopped run's, and the run ends, with what Kubernetes says, once the Job is gone.
    /// A deletion that fails is tried again at the next sweep.
    async fn fail_stuck(&self) {
        let candidates: HashMap<String, Tracked> = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.runs
                .iter()
                .filter(|(name, t)| !t.stop && !st.failing.contains_key(*name))
                .map(|(name, t)| (name.clone(), *t))
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let pods = match call("list the pods of the engine's Jobs", || {
            let (api, lp) = (
                self.pods(),
                ListParams::default().labels(&format!("{MANAGED_BY}=coding-swarm")),
            );
            async move { api.list(&lp).await }
        })
        .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        for pod in &pods {
            let Some(run) = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")) else {
                continue;
            };
            let Some(t) = candidates.get(run) else {
                continue;
            };
            let Some(stuck) = stuck_container(pod, t.since.elapsed(), self.cfg.start_timeout)
            else {
                continue;
            };
            let result = stuck.result(run);
            tracing::warn!(run = %run, container = %stuck.container, reason = %stuck.reason, "the run's pod cannot start; deleting its Job");
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if !st.runs.contains_key(run) {
                    continue;
                }
                st.failing.insert(run.clone(), result);
            }
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..DeleteParams::default()
            };
            if let Err(e) = call(&format!("delete Job {run}"), || {
                let (api, name, dp) = (self.jobs(), run.clone(), dp.clone());
                async move { api.delete(&name, &dp).await }
            })
            .await
            {
                // Not failing yet: the next sweep finds it stuck again and tries again.
                tracing::warn!(run = %run, "{e}");
                self.take_failing(run);
            }
        }
    }

    /// The result a run that could not start ends with, if it is one (forgotten either way).
    fn take_failing(&self, name: &str) -> Option<RunResult> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failing
            .remove(name)
    }

    async fn observe(&self, job: Job) {
        let Some(name) = job.metadata.name.clone() else {
            return;
        };
        if !finished(&job) {
            return;
        }
        let tracked = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match st.runs.get(&name) {
                Some(t) => Some(*t),
                None => {
                    // Only useful right after a start; bounded so it cannot grow for ever.
                    if st.ended.len() > 10_000 {
                        st.ended.clear();
                    }
                    st.ended.insert(name.clone());
                    None
                }
            }
        };
        if let Some(t) = tracked {
            let pods = self.pods_of(&name).await;
            if let Some(alive) = pods.iter().find(|p| pod_alive(p)) {
                // A Job past its deadline is Failed while its pod is still being stopped: the
                // run ends when the pod has (the sweep looks again).
                tracing::info!(run = %name, pod = ?alive.metadata.name, "the Job ended; waiting for its pod to stop");
                return;
            }
            if self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .runs
                .remove(&name)
                .is_none()
            {
                return;
            }
            let result = self
                .take_failing(&name)
                .unwrap_or_else(|| classify_job(&job, &pods, t.stop));
            let _ = self.completions.send(Completion {
                task_id: t.task_id,
                attempt: t.attempt,
                run_name: name,
                result,
            });
        }
    }

    async fn deleted(&self, job: Job) {
        let Some(name) = job.metadata.name.clone() else {
            return;
        };
        let tracked = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let t = st.runs.remove(&name);
            if t.is_none() {
                st.ended.insert(name.clone());
            }
            t
        };
        if let Some(t) = tracked {
            let result = if let Some(failed) = self.take_failing(&name) {
                failed
            } else if finished(&job) {
                self.result_of(&job, t.stop).await
            } else if t.stop {
                RunResult::failure(ErrorClass::Cancelled, "the run was stopped")
            } else {
                RunResult::failure(
                    ErrorClass::Infrastructure,
                    format!("the Job {name} was deleted by someone else"),
                )
            };
            let _ = self.completions.send(Completion {
                task_id: t.task_id,
                attempt: t.attempt,
                run_name: name,
                result,
            });
        }
    }

    /// What a finished Job means: the worker's own result from its termination message, or
    /// the failure Kubernetes reports.
    async fn result_of(&self, job: &Job, stopped: bool) -> RunResult {
        let name = job.metadata.name.clone().unwrap_or_default();
        let pods = self.pods_of(&name).await;
        classify_job(job, &pods, stopped)
    }

    /// Follows the log of `run`'s pod into its buffer: each container's stream (`follow=true`)
    /// to its end, in the order they run; a container that has not started is asked for again
    /// each second while the run goes. A stream cut short is opened again past what was read.
    /// Stops when nobody reads the buffer any more.
    async fn follow(self, run: String) {
        use futures::AsyncBufReadExt;
        let mut pod: Option<String> = None;
        'containers: for container in [CHECKOUT_CONTAINER, AGENT_CONTAINER, PUSH_CONTAINER] {
            let mut seen = 0usize;
            loop {
                if !self.followed.push(&run, "") {
                    return;
                }
                let name = match &pod {
                    Some(p) => p.clone(),
                    None => match self
                        .pods_of(&run)
                        .await
                        .into_iter()
                        .last()
                        .and_then(|p| p.metadata.name)
                    {
                        Some(p) => {
                            pod = Some(p.clone());
                            p
                        }
                        None if self.is_tracked(&run) => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        None => break 'containers,
                    },
                };
                let lp = LogParams {
                    container: Some(container.into()),
                    follow: true,
                    ..LogParams::default()
                };
                let stream = match self.pods().log_stream(&name, &lp).await {
                    Ok(s) => s,
                    // Not started yet (or gone with its run).
                    Err(_) if self.is_tracked(&run) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(_) => continue 'containers,
                };
                let mut reader = Box::pin(stream);
                let mut skip = seen;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) => continue 'containers,
                        Ok(n) => {
                            seen += n;
                            let fresh = &line[skip.min(n)..];
                            skip = skip.saturating_sub(n);
                            if !fresh.is_empty()
                                && !self.followed.push(&run, &String::from_utf8_lossy(fresh))
                            {
                                return;
                            }
                        }
                        // Cut short: open it again, past what was read.
                        Err(e) => {
                            tracing::debug!(run = %run, container, "a followed log was cut: {e}");
                            break;
                        }
                    }
                }
            }
        }
        self.followed.end(&run);
    }

    /// The pods of Job `name` (none when they cannot be listed).
    async fn pods_of(&self, name: &str) -> Vec<Pod> {
        call(&format!("list the pods of Job {name}"), || {
            let (api, lp) = (
                self.pods(),
                ListParams::default().labels(&format!("job-name={name}")),
            );
            async move { api.list(&lp).await }
        })
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    }

    /// Begins tracking; completes at once when the Job ended before anyone tracked it.
    async fn track(&self, launch: &Launch) {
        let ended = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.runs.insert(
                launch.run_name.clone(),
                Tracked {
                    task_id: launch.task_id,
                    attempt: launch.attempt,
                    stop: false,
                    since: std::time::Instant::now(),
                },
            );
            st.ended.remove(&launch.run_name)
        };
        if ended {
            match call(&format!("read Job {}", launch.run_name), || {
                let (api, name) = (self.jobs(), launch.run_name.clone());
                async move { api.get_opt(&name).await }
            })
            .await
            {
                Ok(Some(job)) => self.observe(job).await,
                Ok(None) => {
                    let run = launch.run_name.clone();
                    if self
                        .state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .runs
                        .remove(&run)
                        .is_some()
                    {
                        let result = RunResult::failure(
                            ErrorClass::Infrastructure,
                            format!("the Job {run} is gone"),
                        );
                        let _ = self.completions.send(Completion {
                            task_id: launch.task_id,
                            attempt: launch.attempt,
                            run_name: run,
                            result,
                        });
                    }
                }
                Err(e) => tracing::warn!(run = %launch.run_name, "{e}"),
            }
        }
    }
}

/// Whether a pod's worker may still be running: the pod is `Running`, or one of its
/// containers is. A pod being deleted counts until it is gone or its containers have stopped;
/// a `Pending` one whose containers never started (an image that cannot be pulled) does not.
pub fn pod_alive(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    // While its init containers (the checkout, the agent) run, a pod is `Pending`.
    status.phase.as_deref() == Some("Running")
        || status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// Whether a Job has ended.
pub fn finished(job: &Job) -> bool {
    let Some(status) = &job.status else {
        return false;
    };
    status.succeeded.unwrap_or(0) > 0
        || status.failed.unwrap_or(0) > 0
        || status
            .conditions
            .iter()
            .flatten()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// Waiting reasons that end a run at once: nothing changes them without a person (a wrong image
/// name; a Secret, or a key of it, that is missing).
pub const CANNOT_START: &[&str] = &["InvalidImageName", "CreateContainerConfigError"];
/// Waiting reasons that end a run once it has waited `start_timeout`: a registry may recover.
pub const CANNOT_PULL: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

/// A container of a run's pod that cannot start, as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub container: String,
    pub reason: String,
    pub message: String,
}

impl Stuck {
    /// The run's result: an infrastructure failure naming the container and Kubernetes' words.
    pub fn result(&self, job: &str) -> RunResult {
        RunResult::failure(
            ErrorClass::Infrastructure,
            format!(
                "the {} container of Job {job} cannot start: {}: {}",
                self.container, self.reason, self.message
            ),
        )
    }
}

/// The first container of `pod` (init containers first, then the others) that waits for a
/// reason in [`CANNOT_START`], or in [`CANNOT_PULL`] when the run has `waited` at least
/// `start_timeout`. Pure.
pub fn stuck_container(pod: &Pod, waited: Duration, start_timeout: Duration) -> Option<Stuck> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            let hopeless = CANNOT_START.contains(&reason)
                || (CANNOT_PULL.contains(&reason) && waited >= start_timeout);
            hopeless.then(|| Stuck {
                container: c.name.clone(),
                reason: reason.to_string(),
                message: w.message.clone().unwrap_or_default(),
            })
        })
}

/// The result of a finished Job and its pods. Pure.
pub fn classify_job(job: &Job, pods: &[Pod], stopped: bool) -> RunResult {
    let name = job.metadata.name.clone().unwrap_or_default();
    let statuses: Vec<_> = pods.iter().filter_map(|p| p.status.as_ref()).collect();
    let worker = statuses
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == CONTAINER);
    let terminated = worker
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(message) = terminated.and_then(|t| t.message.as_deref()) {
        // The worker's result, under the job contract; anything else (a message Kubernetes
        // wrote itself) falls through to the Job's own conditions below. So does a worker
        // that says it was stopped when the engine stopped nothing: Kubernetes ended the pod
        // (its deadline, an eviction), and that is what the run's result must say.
        if serde_json::from_str::<serde_json::Value>(message.trim()).is_ok_and(|v| v.is_object()) {
            let result = crate::job::JobResult::read(message.trim().as_bytes());
            if stopped || result.error_class != Some(ErrorClass::Cancelled) {
                return result;
            }
        }
    }
    if stopped {
        return RunResult::failure(ErrorClass::Cancelled, "the run was stopped");
    }
    let failed_reason = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
        })
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    // A checkout or agent container that ended badly (killed, out of memory: the worker in it
    // always exits 0 otherwise) keeps the pod from reaching the push container.
    let init_failure = statuses
        .iter()
        .flat_map(|s| s.init_container_statuses.iter().flatten())
        .find_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| (c.name.clone(), t))
        });
    if let Some((container, t)) = init_failure {
        let why = t.reason.clone().unwrap_or_default();
        return RunResult::failure(
            if why == "OOMKilled" {
                ErrorClass::Infrastructure
            } else {
                ErrorClass::Crash
            },
            format!(
                "the {container} container of Job {name} exited with {} ({why}){}",
                t.exit_code,
                if why == "OOMKilled" {
                    "; raise its memory limit"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some(t) = terminated {
        if t.reason.as_deref() == Some("OOMKilled") {
            return RunResult::failure(
                ErrorClass::Infrastructure,
                format!(
                    "the worker of Job {name} was OOM-killed (exit {}); raise its memory limit",
                    t.exit_code
                ),
            );
        }
    }
    if let Some(evicted) = statuses
        .iter()
        .find(|s| s.reason.as_deref() == Some("Evicted"))
    {
        return RunResult::failure(
            ErrorClass::Infrastructure,
            format!(
                "the pod of Job {name} was evicted: {}",
                evicted.message.clone().unwrap_or_default()
            ),
        );
    }
    if let Some(stuck) = pods
        .iter()
        .find_map(|p| stuck_container(p, Duration::MAX, Duration::ZERO))
    {
        return stuck.result(&name);
    }
    match failed_reason {
        Some((reason, message)) if reason == "DeadlineExceeded" => RunResult::failure(
            ErrorClass::Timeout,
            format!("the Job {name} exceeded its deadline: {message}"),
        ),
        Some((reason, message)) => match terminated {
            Some(t) => RunResult::failure(
                ErrorClass::Crash,
                format!(
                    "the worker exited with {} and no result ({reason}: {message})",
                    t.exit_code
                ),
            ),
            None => RunResult::failure(
                ErrorClass::Infrastructure,
                format!("the Job {name} failed: {reason}: {message}"),
            ),
        },
        None => match terminated {
            Some(t) => RunResult::failure(
                ErrorClass::Crash,
                format!("the worker exited with {} and left no result", t.exit_code),
            ),
            None => RunResult::failure(
                ErrorClass::Infrastructure,
                format!("the Job {name} ended without a pod"),
            ),
        },
    }
}

/// Runs one API call (the client's [`KubeRetry`] has retried it already where that helps); a
/// 403 becomes a clear error about the engine's permissions.
async fn call<T, F, Fut>(what: &str, mut op: F) -> Result<T, RuntimeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    match op().await {
        Ok(v) => Ok(v),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(RuntimeError::Forbidden {
            what: what.to_string(),
            message: s.message.clone(),
        }),
        Err(source) => Err(RuntimeError::Kube {
            what: what.to_string(),
            source,
        }),
    }
}

/// How many times one API request is sent at most.
pub const KUBE_TRIES: u32 = 6;
/// The first wait before a request is sent again; it doubles up to [`KUBE_MAX_DELAY`].
const KUBE_FIRST_DELAY: Duration = Duration::from_millis(200);
const KUBE_MAX_DELAY: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured: a server asking for more gets the error sooner.
const KUBE_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The one retry policy of the engine's Kubernetes requests (kube's own default retry layer is
/// turned off, so that the two do not multiply): a request answered 429 or 5xx, or that failed
/// on its way, is sent again up to [`KUBE_TRIES`] times in all, after an exponential backoff
/// or the server's `Retry-After` when that is longer (at most [`KUBE_MAX_RETRY_AFTER`]).
#[derive(Debug, Clone)]
pub struct KubeRetry {
    tries: u32,
    delay: Duration,
}

impl Default for KubeRetry {
    fn default() -> Self {
        Self {
            tries: 1,
            delay: KUBE_FIRST_DELAY,
        }
    }
}

impl KubeRetry {
    /// The wait before the next try, if there is one; `retry_after` is what the server asked.
    fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.tries >= KUBE_TRIES {
            return None;
        }
        self.tries += 1;
        let wait = retry_after
            .map(|r| r.min(KUBE_MAX_RETRY_AFTER))
            .map_or(self.delay, |r| r.max(self.delay));
        self.delay = (self.delay * 2).min(KUBE_MAX_DELAY);
        Some(wait)
    }
}

impl<B> tower::retry::Policy<http::Request<kube::client::Body>, http::Response<B>, tower::BoxError>
    for KubeRetry
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut http::Request<kube::client::Body>,
        result: &mut Result<http::Response<B>, tower::BoxError>,
    ) -> Option<Self::Future> {
        let (why, retry_after) = match result {
            Ok(res)
                if res.status() == http::StatusCode::TOO_MANY_REQUESTS
                    || res.status().is_server_error() =>
            {
                // "Retry-After" in seconds, as the API server sends it.
                let after = res
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                (res.status().to_string(), after)
            }
            Ok(_) => return None,
            Err(e) => (e.to_string(), None),
        };
        let wait = self.next_wait(retry_after)?;
        tracing::warn!(method = %req.method(), path = req.uri().path(), "the Kubernetes API answered {why}; trying again in {wait:?}");
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(
        &mut self,
        req: &http::Request<kube::client::Body>,
    ) -> Option<http::Request<kube::client::Body>> {
        let mut copy = http::Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(req.body().try_clone()?)
            .ok()?;
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

impl Runtime for KubeRuntime {
    async fn launch(&self, launch: Launch) -> Result<(), RuntimeError> {
        if launch.adopt_only {
            let existing = call(&format!("read Job {}", launch.run_name), || {
                let (api, name) = (self.jobs(), launch.run_name.clone());
                async move { api.get_opt(&name).await }
            })
            .await?;
            if existing.is_none() {
                // Launched before the restart and gone now (its TTL ran out, or someone
                // deleted it): starting it again would run the attempt twice.
                let result = RunResult::failure(
                    ErrorClass::Infrastructure,
                    format!("the Job {} is gone (finished and cleaned up, or deleted, while no engine watched); its result is lost", launch.run_name),
                );
                let _ = self.completions.send(Completion {
                    task_id: launch.task_id,
                    attempt: launch.attempt,
                    run_name: launch.run_name.clone(),
                    result,
                });
                return Ok(());
            }
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ended
                .insert(launch.run_name.clone());
            self.track(&launch).await;
            return Ok(());
        }
        let job = build_job(&launch, &self.cfg);
        let created = match call(&format!("create Job {}", launch.run_name), || {
            let (api, job) = (self.jobs(), job.clone());
            async move { api.create(&PostParams::default(), &job).await }
        })
        .await
        {
            Ok(job) => job,
            Err(RuntimeError::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => {
                // It exists: an earlier engine created it. Adopt it.
                tracing::info!(run = %launch.run_name, "adopting an existing Job");
                self.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .ended
                    .insert(launch.run_name.clone());
                call(&format!("read Job {}", launch.run_name), || {
                    let (api, name) = (self.jobs(), launch.run_name.clone());
                    async move { api.get(&name).await }
                })
                .await?
            }
            Err(e) => return Err(e),
        };
        // The task, in a ConfigMap the Job owns; the pod waits for it to appear.
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let map = build_task_config_map(&launch, &self.cfg, &uid);
        self.create_owned(&launch.run_name, "its task", self.config_maps(), map)
            .await?;
        if let Some(token) = &launch.git_token {
            // The job's own git token, in a Secret the Job owns, mounted by the checkout and
            // push containers only; the pod waits for it as for the ConfigMap.
            let secret = build_git_token_secret(&launch, &self.cfg, &uid, token);
            self.create_owned(&launch.run_name, "its git token", self.secrets(), secret)
                .await?;
        }
        self.track(&launch).await;
        Ok(())
    }

    async fn stop(&self, run_name: &str) {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match st.runs.get_mut(run_name) {
                Some(t) if !t.stop => t.stop = true,
                _ => return,
            }
        }
        // In the foreground: the Job stays (with a deletionTimestamp) until its pods are gone,
        // and its deletion, the run's end, is seen only then. The addressee's next task cannot
        // start while this one's agent still runs.
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        if let Err(e) = call(&format!("delete Job {run_name}"), || {
            let (api, name, dp) = (self.jobs(), run_name.to_string(), dp.clone());
            async move { api.delete(&name, &dp).await }
        })
        .await
        {
            tracing::warn!(run = run_name, "{e}");
        }
    }

    fn is_tracked(&self, run_name: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .runs
            .contains_key(run_name)
    }

    async fn logs(&self, run_name: &str) -> Result<String, RuntimeError> {
        let pods = call(&format!("list the pods of Job {run_name}"), || {
            let (api, lp) = (
                self.pods(),
                ListParams::default().labels(&format!("job-name={run_name}")),
            );
            async move { api.list(&lp).await }
        })
        .await?;
        let pod = pods
            .items
            .into_iter()
            .last()
            .and_then(|p| p.metadata.name)
            .ok_or_else(|| RuntimeError::NoRun(run_name.to_string()))?;
        // The pod's containers in the order they ran; one that has not started has no log.
        let mut out = String::new();
        for container in [CHECKOUT_CONTAINER, AGENT_CONTAINER, PUSH_CONTAINER] {
            let lp = LogParams {
                container: Some(container.into()),
                tail_lines: Some(5000),
                ..LogParams::default()
            };
            let got = call(&format!("read the log of pod {pod}"), || {
                let (api, pod, lp) = (self.pods(), pod.clone(), lp.clone());
                async move { api.logs(&pod, &lp).await }
            })
            .await;
            match got {
                Ok(text) => out.push_str(&text),
                Err(e) if container == PUSH_CONTAINER && out.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// A running pod's log is followed (`follow=true`, container after container) into a
    /// buffer its readers share, so a reader that polls asks nothing of the API server; a run
    /// that no longer runs is read once, as [`Runtime::logs`] reads it.
    async fn read_log(&self, run_name: &str, offset: u64) -> Result<super::LogRead, RuntimeError> {
        use super::followed::Visit;
        if !self.is_tracked(run_name) && !self.followed.ended(run_name) {
            if let Visit::Read(r) = self.followed.visit(run_name, offset) {
                return Ok(r);
            }
            self.followed.forget(run_name);
            return Ok(super::LogRead::past(self.logs(run_name).await?, offset));
        }
        match self.followed.visit(run_name, offset) {
            Visit::Read(r) => Ok(r),
            Visit::Start => {
                tokio::spawn(self.clone().follow(run_name.to_string()));
                Ok(super::LogRead {
                    text: String::new(),
                    next: offset,
                    restarted: false,
                })
            }
        }
    }

    async fn renew_git_token(
        &self,
        run_name: &str,
        token: &crate::config::Secret,
    ) -> Result<(), RuntimeError> {
        // The kubelet updates the mounted file; the push container reads it when it pushes.
        let patch = serde_json::json!({"stringData": {"token": token.expose()}});
        call(&format!("renew the git token of {run_name}"), || {
            let (api, patch) = (self.secrets(), patch.clone());
            let name = run_name.to_string();
            async move {
                api.patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            }
        })
        .await
        .map(|_| ())
    }

    async fn ready(&self) -> Result<(), RuntimeError> {
        self.client
            .apiserver_version()
            .await
            .map(|_| ())
            .map_err(|source| RuntimeError::Kube {
                what: "reach the API server".into(),
                source,
            })
    }
}
