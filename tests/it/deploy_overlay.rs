//! `deploy/overlays/example`, rendered as an operator renders it: from a clean clone once the
//! steps of deploy/README.md have made the env files; its generated config, Secrets and pinned
//! images wired together, the engine's Secret apart from the workers'; the engine's Deployment
//! and Role; the webhook Ingress as README.md shows it. I/O: temporary directories, kubectl,
//! bash (the README's commands), git (what it ignores).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::deploy::{
    deploy_dir, engine_config, find, images, kustomize, overlay, render, secret_value, typed,
    DeployCopy,
};

#[test]
fn a_clean_clone_renders_once_the_readme_steps_made_the_env_files() {
    let copy = DeployCopy::clean();
    let err = kustomize(&copy.overlay()).expect_err("no engine.env: kustomize must refuse");
    assert!(err.contains("engine.env"), "{err}");

    // Steps 2 and 3 of deploy/README.md, as written: copy the overlay, the templates, and
    // fill in the database password and the API token.
    let script = format!(
        "set -eu\n{}\n{}",
        readme_commands("### 2."),
        readme_commands("### 3.")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(copy.root.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = render(&copy.root.join("overlays/mine"));
    let config = engine_config(&objects);
    let secret = objects
        .iter()
        .find(|o| {
            o["kind"] == "Secret" && o["metadata"]["name"] != config.kubernetes.secret.as_str()
        })
        .unwrap();
    let value = |k: &str| secret_value(&secret["data"][k]);
    let password = value("POSTGRES_PASSWORD");
    assert_eq!(password.len(), 48, "{password}");
    assert_eq!(
        value("SWARM_DATABASE_URL"),
        format!("postgres://swarm:{password}@postgres:5432/swarm")
    );
    assert_eq!(value("SWARM_API_TOKEN").len(), 64);

    // The filled-in files stay out of git: by the overlay's own .gitignore, which travels with
    // a copy of it, and by the repository's for any overlay under deploy/overlays/. The
    // templates are not ignored.
    let ignored_by = |path: &str| -> Option<String> {
        let out = Command::new("git")
            .args(["check-ignore", "-v", "--no-index", path])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        out.status
            .success()
            .then(|| text.split(':').next().unwrap().to_string())
    };
    for name in ["engine.env", "workers.env"] {
        let example = format!("deploy/overlays/example/{name}");
        assert_eq!(
            ignored_by(&example).as_deref(),
            Some("deploy/overlays/example/.gitignore"),
            "{example}"
        );
        let mine = format!("deploy/overlays/mine/{name}");
        assert_eq!(ignored_by(&mine).as_deref(), Some(".gitignore"), "{mine}");
        assert_eq!(ignored_by(&format!("{example}.example")), None);
    }
    // The templates hold no value for a password or token: nothing runs on a placeholder.
    for name in ["engine.env.example", "workers.env.example"] {
        let text =
            std::fs::read_to_string(deploy_dir().join("overlays/example").join(name)).unwrap();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.split_once('=').unwrap();
            assert!(
                key == "SWARM_DATABASE_URL" || value.is_empty(),
                "{name}: {key} has a value"
            );
            assert_ne!(key, "ANTHROPIC_API_KEY");
        }
    }
}

#[test]
fn the_overlay_wires_its_config_secrets_and_pinned_images() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    let objects = overlay();
    let config = engine_config(&objects);
    assert_eq!(
        config.runtime,
        coding_swarm::config::RuntimeKind::Kubernetes
    );
    assert_eq!(config.http.listen, "0.0.0.0:8080");
    let listen_port = find(&objects, "Deployment", "coding-swarm-engine")["spec"]["template"]
        ["spec"]["containers"][0]["ports"][0]["containerPort"]
        .clone();
    assert_eq!(
        listen_port, 8080,
        "the container port is the port of [http] listen"
    );
    assert!(config.database_url().starts_with("postgres://"));
    // Everything is in the namespace the engine starts Jobs in.
    let ns = config.kubernetes.namespace.clone();
    find(&objects, "Namespace", &ns);
    for o in objects.iter().filter(|o| o["kind"] != "Namespace") {
        assert_eq!(o["metadata"]["namespace"], ns.as_str(), "{}", o["metadata"]);
    }
    // The ConfigMap's name carries a hash of swarm.toml, so a change rolls the engine.
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    assert!(cm_name.starts_with("coding-swarm-config-"), "{cm_name}");

    // Two Secrets: the workers' under the exact name of [kubernetes] secret, and the engine's.
    let workers = find(&objects, "Secret", &config.kubernetes.secret);
    let keys = |s: &Value| -> BTreeSet<String> {
        s["data"].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(
        keys(workers),
        BTreeSet::from(["CLAUDE_CODE_OAUTH_TOKEN".into(), "SWARM_GIT_TOKEN".into()])
    );
    let engine_secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] != workers["metadata"]["name"])
        .unwrap();
    let engine_secret_name = engine_secret["metadata"]["name"].as_str().unwrap();
    // A hash of engine.env in the name: a change rolls the engine.
    assert!(engine_secret_name.starts_with("coding-swarm-engine-secrets-"));
    for k in [
        "POSTGRES_PASSWORD",
        "SWARM_DATABASE_URL",
        "SWARM_API_TOKEN",
        "SWARM_GIT_TOKEN",
    ] {
        assert!(
            keys(engine_secret).contains(k),
            "the engine's Secret has no {k}"
        );
    }
    // The engine and Postgres read the engine's Secret only, never the workers'.
    for o in objects.iter().filter(|o| o["spec"]["template"].is_object()) {
        let text = o["spec"]["template"].to_string();
        assert!(
            !text.contains(&format!("\"{}\"", config.kubernetes.secret)),
            "{text}"
        );
    }
    let d: Deployment = typed(find(&objects, "Deployment", "coding-swarm-engine"));
    let c = &d.spec.template.spec.unwrap().containers[0];
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        engine_secret_name
    );
    let s: StatefulSet = typed(find(&objects, "StatefulSet", "postgres"));
    let pg = &s.spec.template.spec.unwrap().containers[0];
    let password = pg
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POSTGRES_PASSWORD")
        .unwrap();
    let r = password
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(r.name, engine_secret_name);

    // Pinned images: the engine's and the worker's at the release of this crate.
    let version = env!("CARGO_PKG_VERSION");
    let imgs = images(&objects);
    assert!(
        imgs.contains(&format!(
            "registry.example.com/coding-swarm-engine:{version}"
        )),
        "{imgs:?}"
    );
    assert_eq!(
        config.kubernetes.image,
        format!("registry.example.com/coding-swarm-worker:{version}")
    );
    for image in imgs.iter().chain([&config.kubernetes.image]) {
        let tag = image
            .rsplit('/')
            .next()
            .unwrap()
            .split_once(':')
            .map(|(_, t)| t);
        assert!(tag.is_some_and(|t| t != "latest"), "{image} is not pinned");
    }
}

#[test]
fn the_deployment_and_role_are_what_the_engine_needs() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::Role;
    let objects = overlay();
    let d: Deployment = typed(find(&objects, "Deployment", "coding-swarm-engine"));
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let c = &spec.template.spec.unwrap().containers[0];
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone()
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    // Required by name: without them the container is not created.
    let required: Vec<&str> = c
        .env
        .iter()
        .flatten()
        .filter(|e| {
            e.value_from.as_ref().is_some_and(|f| {
                f.secret_key_ref
                    .as_ref()
                    .is_some_and(|r| r.optional != Some(true))
            })
        })
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(required, ["SWARM_DATABASE_URL", "SWARM_API_TOKEN"]);

    let role: Role = typed(find(&objects, "Role", "coding-swarm-engine"));
    let mut rules: Vec<String> = Vec::new();
    for r in role.rules.unwrap() {
        let groups = r.api_groups.unwrap_or_default().join(",");
        for res in r.resources.unwrap_or_default() {
            for v in &r.verbs {
                rules.push(format!("{groups}/{res}:{v}"));
            }
        }
    }
    rules.sort();
    let mut want = [
        "batch/jobs:create",
        "batch/jobs:get",
        "batch/jobs:list",
        "batch/jobs:watch",
        "batch/jobs:delete",
        "/configmaps:create",
        "/secrets:create",
        "/secrets:patch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/pods/log:get",
    ];
    want.sort();
    assert_eq!(rules, want, "only what the engine needs");
}

/// The commands of a `### ` step of deploy/README.md: its plain fenced blocks.
fn readme_commands(heading: &str) -> String {
    let readme = std::fs::read_to_string(deploy_dir().join("README.md")).unwrap();
    let section = readme
        .split("\n### ")
        .find(|s| s.starts_with(heading.trim_start_matches("### ")))
        .unwrap_or_else(|| panic!("deploy/README.md has no {heading}"));
    section
        .split("\n```\n")
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fenced block of README.md that holds `kind: Ingress`.
fn readme_ingress() -> Value {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("kind: Ingress"))
        .expect("README.md shows the webhook Ingress");
    serde_saphyr::from_str(block).unwrap()
}

#[test]
fn the_webhook_ingress_routes_only_the_webhook_and_is_the_one_the_readme_shows() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::Ingress;
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(deploy_dir().join("components/webhook-ingress/ingress.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        readme_ingress(),
        file,
        "README section 6 and the component differ"
    );

    let objects = overlay();
    let ingress: Ingress = typed(find(&objects, "Ingress", "coding-swarm-webhooks"));
    let rules = ingress.spec.unwrap().rules.unwrap();
    let paths: Vec<_> = rules
        .iter()
        .flat_map(|r| r.http.as_ref().unwrap().paths.iter())
        .collect();
    assert_eq!(paths.len(), 1, "only the webhook");
    assert_eq!(paths[0].path.as_deref(), Some("/webhooks/github"));
    assert_eq!(paths[0].path_type, "Exact");
    let backend = paths[0].backend.service.as_ref().unwrap();
    let port = backend.port.as_ref().unwrap().name.clone().unwrap();
    let svc: Service = typed(find(&objects, "Service", &backend.name));
    let ports = svc.spec.unwrap().ports.unwrap();
    assert!(
        ports.iter().any(|p| p.name.as_deref() == Some(&port)),
        "no port {port}"
    );
}
