//! `swarm doctor` on the Kubernetes runtime and with GitHub, against the fake API server and
//! the fake GitHub: the namespace, the workers' Secret and each permission the engine needs (by
//! SelfSubjectAccessReview) are a line each, a denied verb or a missing Secret fails its line;
//! GitHub credentials are tried by one authenticated request, and a bad token is reported
//! without being printed. And the engine's Role grants every permission the doctor asks about.

use std::path::Path;

use coding_swarm::config::{Config, Secret, Secrets};
use coding_swarm::doctor::{self, Check};
use coding_swarm::runtime::kubernetes::ENGINE_PERMISSIONS;
use k8s_openapi::api::rbac::v1::Role;

use crate::ghapi::{GitHubServer, TOKEN};
use crate::kubeapi::{ApiServer, NS};

fn config(extra: &str) -> Config {
    let dir = std::env::temp_dir();
    let text = format!(
        "data_dir = {:?}\ndefault_agent = \"sh\"\nsandbox = \"none\"\n{extra}\n[agents.sh]\ncommand = [\"true\"]\n",
        dir.join("coding-swarm-doctor-test-missing").display()
    );
    Config::parse(&text, "the test", &dir, Vec::<(String, String)>::new()).unwrap()
}

fn kube_config(url: &str, secret: &str) -> Config {
    config(&format!(
        "runtime = \"kubernetes\"\n[kubernetes]\nnamespace = \"{NS}\"\nsecret = \"{secret}\"\napi_url = \"{url}\"\n"
    ))
}

fn line<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
}

/// The doctor's line for each permission, as `kubernetes: VERB RESOURCE`.
fn permission_lines() -> Vec<String> {
    ENGINE_PERMISSIONS
        .iter()
        .flat_map(|(group, resource, verbs)| {
            let shown = if group.is_empty() || resource.contains('/') {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            verbs
                .iter()
                .map(move |v| format!("kubernetes: {v} {shown}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_namespace_the_secret_and_each_permission() {
    let server = ApiServer::start().await;
    server
        .api
        .add_secret("coding-swarm-secrets", &["CLAUDE_CODE_OAUTH_TOKEN"]);
    let cfg = kube_config(&server.url, "coding-swarm-secrets");
    let checks = doctor::run(&cfg, &Secrets::default()).await;
    let kube: Vec<&Check> = checks
        .iter()
        .filter(|c| c.name.starts_with("kubernetes"))
        .collect();
    assert!(kube.iter().all(|c| c.ok), "{kube:#?}");
    assert!(line(&checks, "kubernetes: API server")
        .detail
        .contains("v1.33"));
    assert!(line(&checks, &format!("kubernetes: namespace {NS}")).ok);
    assert!(line(&checks, "kubernetes: Secret coding-swarm-secrets").ok);
    let lines = permission_lines();
    assert_eq!(lines.len(), 10, "{lines:?}");
    for name in &lines {
        assert!(line(&checks, name).detail.contains("allowed"), "{name}");
    }
    // One review a permission, each in the engine's namespace, in the real wire format.
    let reviews = server.api.reviews();
    assert_eq!(reviews.len(), lines.len());
    for r in &reviews {
        assert_eq!(r["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(r["spec"]["resourceAttributes"]["namespace"], NS);
    }
    assert!(reviews.iter().any(|r| {
        let a = &r["spec"]["resourceAttributes"];
        a["resource"] == "pods" && a["subresource"] == "log" && a["verb"] == "get"
    }));
    // The Secret was read as metadata only: its values never reached the doctor.
    assert!(
        !format!("{checks:?}").contains("c2VjcmV0LXZhbHVl"),
        "{checks:?}"
    );

    // One verb denied: that line fails and names it; the others stay ok.
    server.api.deny("delete", "batch", "jobs");
    let checks = doctor::run(&cfg, &Secrets::default()).await;
    let denied = line(&checks, "kubernetes: delete jobs.batch");
    assert!(!denied.ok, "{denied:?}");
    assert!(
        denied.detail.contains("denied") && denied.detail.contains("role.yaml"),
        "{denied:?}"
    );
    assert!(line(&checks, "kubernetes: create jobs.batch").ok);
    assert_eq!(
        checks
            .iter()
            .filter(|c| c.name.starts_with("kubernetes") && !c.ok)
            .count(),
        1
    );

    // A Secret that is not there fails its line.
    let checks = doctor::run(
        &kube_config(&server.url, "no-such-secret"),
        &Secrets::default(),
    )
    .await;
    let secret = line(&checks, "kubernetes: Secret no-such-secret");
    assert!(
        !secret.ok && secret.detail.contains("not found"),
        "{secret:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_without_a_cluster_says_so_in_one_line() {
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let checks = doctor::run(
        &kube_config(&format!("http://127.0.0.1:{port}"), "s"),
        &Secrets::default(),
    )
    .await;
    let kube: Vec<&Check> = checks
        .iter()
        .filter(|c| c.name.starts_with("kubernetes"))
        .collect();
    assert_eq!(kube.len(), 1, "{kube:#?}");
    assert!(
        !kube[0].ok && kube[0].detail.contains("cannot reach"),
        "{kube:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_tries_the_github_credentials_without_printing_them() {
    let github = GitHubServer::start().await;
    let cfg = config(&format!("[github]\napi_url = \"{}\"\n", github.url));
    let with_token = |t: &str| Secrets {
        github_token: Secret::new(t.to_string()),
        ..Secrets::default()
    };
    let checks = doctor::run(&cfg, &with_token(TOKEN)).await;
    let gh = line(&checks, "github: credentials");
    assert!(gh.ok && gh.detail.contains("swarm-bot"), "{gh:?}");
    assert!(github
        .hub()
        .seen
        .iter()
        .any(|s| s.path.starts_with("/user")));

    let bad = "ghp_not-a-token-github-knows-0123456789";
    let checks = doctor::run(&cfg, &with_token(bad)).await;
    let gh = line(&checks, "github: credentials");
    assert!(!gh.ok, "{gh:?}");
    assert!(
        gh.detail.contains("401") && gh.detail.contains("Bad credentials"),
        "{gh:?}"
    );
    assert!(
        !format!("{checks:?}").contains(bad),
        "the token is not printed"
    );

    // A GitHub App: its JWT is tried on GET /app.
    let key = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-app-test-key.pem"),
    )
    .unwrap();
    let cfg = config(&format!(
        "[github]\napi_url = \"{}\"\napp_id = {}\n",
        github.url,
        crate::ghapi::APP_ID
    ));
    let secrets = Secrets {
        github_app_key: Secret::new(key),
        ..Secrets::default()
    };
    let checks = doctor::run(&cfg, &secrets).await;
    let gh = line(&checks, "github: credentials");
    assert!(gh.ok && gh.detail.contains("coding-swarm-test"), "{gh:?}");
    // No credentials at all: a clear failure.
    let checks = doctor::run(&cfg, &Secrets::default()).await;
    let gh = line(&checks, "github: credentials");
    assert!(!gh.ok && gh.detail.contains("SWARM_GITHUB_TOKEN"), "{gh:?}");
}

/// `deploy/base/role.yaml` grants every permission the engine uses (the list the doctor checks).
#[test]
fn the_engines_role_grants_every_permission_it_uses() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/role.yaml"),
    )
    .unwrap();
    let role: Role = serde_saphyr::from_str(&text).unwrap();
    let rules = role.rules.unwrap_or_default();
    for (group, resource, verbs) in ENGINE_PERMISSIONS {
        for verb in *verbs {
            let granted = rules.iter().any(|r| {
                let has = |list: &Option<Vec<String>>, want: &str| {
                    list.iter().flatten().any(|x| x == want || x == "*")
                };
                has(&r.api_groups, group)
                    && has(&r.resources, resource)
                    && r.verbs.iter().any(|v| v == verb || v == "*")
            });
            assert!(
                granted,
                "role.yaml does not grant {verb} {resource} in {group:?}"
            );
        }
    }
}
