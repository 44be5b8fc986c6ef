//! `deploy/`: every manifest parses into the real k8s-openapi type of its kind and survives a
//! round trip unchanged (a misspelled or misplaced field does not), the kustomization lists every
//! manifest, and the ConfigMap's swarm.toml is a valid config.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

fn round_trip<T: DeserializeOwned + Serialize>(path: &Path, original: &Value) {
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let back = serde_json::to_value(&typed).unwrap();
    let (a, b) = (normalize(original.clone()), normalize(back));
    assert!(
        a == b,
        "{}: a field is not part of the {} type (misspelled or misplaced?)\nfile:  {a}\ntyped: {b}",
        path.display(),
        std::any::type_name::<T>()
    );
}

fn check(path: &Path) -> String {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let v = yaml(path);
    let kind = v["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no kind", path.display()))
        .to_string();
    match kind.as_str() {
        "Namespace" => round_trip::<Namespace>(path, &v),
        "ServiceAccount" => round_trip::<ServiceAccount>(path, &v),
        "Role" => round_trip::<Role>(path, &v),
        "RoleBinding" => round_trip::<RoleBinding>(path, &v),
        "ConfigMap" => round_trip::<ConfigMap>(path, &v),
        "Deployment" => round_trip::<Deployment>(path, &v),
        "StatefulSet" => round_trip::<StatefulSet>(path, &v),
        "Service" => round_trip::<Service>(path, &v),
        "Secret" => round_trip::<Secret>(path, &v),
        other => panic!("{}: no test for kind {other}", path.display()),
    }
    kind
}

#[test]
fn every_manifest_is_a_valid_object_and_the_kustomization_lists_them_all() {
    let dir = deploy();
    let mut manifests: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    manifests.sort();
    let mut kinds = Vec::new();
    for m in &manifests {
        kinds.push(check(&dir.join(m)));
    }
    for want in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "StatefulSet",
    ] {
        assert!(kinds.iter().any(|k| k == want), "no {want} in deploy/");
    }
    let k = yaml(&dir.join("kustomization.yaml"));
    assert_eq!(k["kind"], "Kustomization");
    let mut listed: Vec<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed, manifests,
        "kustomization.yaml must list every manifest"
    );
    for e in std::fs::read_dir(dir.join("examples")).unwrap().flatten() {
        assert_eq!(check(&e.path()), "Secret");
    }
}

#[test]
fn the_deployment_and_role_are_what_the_engine_needs() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::Role;
    let dir = deploy();
    let find = |kind: &str| {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "yaml") && yaml(p)["kind"] == kind)
            .unwrap()
    };
    let d: Deployment = serde_json::from_value(yaml(&find("Deployment"))).unwrap();
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    let role: Role = serde_json::from_value(yaml(&find("Role"))).unwrap();
    let mut rules: Vec<String> = role
        .rules
        .unwrap()
        .iter()
        .flat_map(|r| {
            let groups = r.api_groups.clone().unwrap_or_default();
            let verbs = r.verbs.clone();
            r.resources
                .clone()
                .unwrap_or_default()
                .into_iter()
                .flat_map(move |res| {
                    let groups = groups.clone();
                    verbs
                        .clone()
                        .into_iter()
                        .map(move |v| format!("{}/{res}:{v}", groups.join(",")))
                })
        })
        .collect();
    rules.sort();
    let mut want: Vec<String> = [
        "batch/jobs:create",
        "batch/jobs:get",
        "batch/jobs:list",
        "batch/jobs:watch",
        "batch/jobs:delete",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/pods/log:get",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(rules, want, "only what the engine needs");
    // The ConfigMap's swarm.toml is a config the engine accepts.
    let cm = yaml(&find("ConfigMap"));
    let toml_text = cm["data"]["swarm.toml"].as_str().unwrap();
    let config = coding_swarm::config::Config::parse(
        toml_text,
        "deploy/configmap.yaml",
        Path::new("/etc/swarm"),
        std::iter::empty(),
    )
    .unwrap();
    assert_eq!(
        config.runtime,
        coding_swarm::config::RuntimeKind::Kubernetes
    );
}
