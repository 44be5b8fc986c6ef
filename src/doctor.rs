//! `swarm doctor`: what is missing for real runs, one line per check. I/O: runs the agent CLI,
//! connects to the database, asks each remote for its head, and, when configured, asks the
//! Kubernetes API server and GitHub whether the credentials work (reads only, and asks).

use std::process::Command;

use crate::config::{AgentKind, Config};
use crate::gitops;
use crate::store::Store;

/// The Claude Code version the worker image and the tests pin.
pub const PINNED_CLAUDE_CODE: &str = include_str!("../worker/CLAUDE_CODE_VERSION");

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub name: String,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<4} {}: {}",
            if self.ok { "ok" } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}

fn check(ok: bool, name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        ok,
        name: name.into(),
        detail: detail.into(),
    }
}

/// Runs every check.
pub async fn run(config: &Config, secrets: &crate::config::Secrets) -> Vec<Check> {
    let mut out = Vec::new();
    let api_key = std::env::var("ANTHROPIC_API_KEY").is_ok_and(|v| !v.trim().is_empty());
    out.push(check(
        !api_key,
        "ANTHROPIC_API_KEY",
        if api_key { "is set: Claude Code would bill per token; unset it (jobs never get it, but remove it anyway)" } else { "not set" },
    ));
    if config.runtime == crate::config::RuntimeKind::Local {
        out.push(match config.sandbox {
            crate::config::SandboxMode::Bwrap => match crate::worker::sandbox::probe() {
                Ok(()) => check(true, "sandbox", "bubblewrap works: agents run in their own namespaces"),
                Err(why) => check(
                    false,
                    "sandbox",
                    format!("{why}; install bubblewrap and allow unprivileged user namespaces, or set sandbox = \"none\" (the engine refuses to start until then)"),
                ),
            },
            crate::config::SandboxMode::None => check(
                true,
                "sandbox",
                "off (sandbox = \"none\"): agents run as the engine's user and can read its files",
            ),
        });
    }
    let mut claude_profiles: Vec<String> = config
        .agents
        .iter()
        .filter(|(_, p)| p.kind == AgentKind::Claude)
        .map(|(n, _)| n.clone())
        .collect();
    // The default agent is checked too when it is the built-in claude profile.
    if !claude_profiles.contains(&config.default_agent)
        && config
            .agent(&config.default_agent)
            .is_some_and(|p| p.kind == AgentKind::Claude)
    {
        claude_profiles.push(config.default_agent.clone());
    }
    for name in claude_profiles {
        let Some(profile) = config.agent(&name) else {
            continue;
        };
        let program = profile
            .command
            .first()
            .cloned()
            .unwrap_or_else(|| "claude".into());
        match Command::new(&program)
            .arg("--version")
            .env("DISABLE_AUTOUPDATER", "1")
            .output()
        {
            Ok(o) if o.status.success() => {
                let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let pinned = PINNED_CLAUDE_CODE.trim();
                let note = if version.starts_with(pinned) {
                    String::new()
                } else {
                    format!(" (the worker image pins {pinned})")
                };
                out.push(check(
                    true,
                    format!("agent {name}: CLI"),
                    format!("{program}: {version}{note}"),
                ));
            }
            Ok(o) => out.push(check(
                false,
                format!("agent {name}: CLI"),
                format!(
                    "{program} --version failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            )),
            Err(e) => out.push(check(
                false,
                format!("agent {name}: CLI"),
                format!(
                    "{program}: {e}; install it with `npm install -g @anthropic-ai/claude-code@{}`",
                    PINNED_CLAUDE_CODE.trim()
                ),
            )),
        }
        let env = crate::worker::expand_profile_env(&profile.env);
        let token = env
            .get("CLAUDE_CODE_OAUTH_TOKEN")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let file = std::env::var_os("HOME")
            .map(|h| std::path::PathBuf::from(h).join(".claude/.credentials.json"))
            .filter(|f| f.is_file());
        let (ok, detail) = match (token, file) {
            (Some(t), _) if t.starts_with("sk-ant-api") => (false, "CLAUDE_CODE_OAUTH_TOKEN holds an API key (sk-ant-api...), not a subscription token; run `claude setup-token`".to_string()),
            (Some(t), _) if t.starts_with("sk-ant-oat") => (true, "CLAUDE_CODE_OAUTH_TOKEN is a subscription (OAuth) token".to_string()),
            (Some(_), _) => (true, "CLAUDE_CODE_OAUTH_TOKEN is set (not in the usual sk-ant-oat... form)".to_string()),
            (None, Some(f)) => (true, format!("{} (subscription login); CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token` is recommended", f.display())),
            (None, None) => (false, "no CLAUDE_CODE_OAUTH_TOKEN for the profile and no ~/.claude/.credentials.json; run `claude setup-token` and export the token".to_string()),
        };
        out.push(check(ok, format!("agent {name}: credentials"), detail));
    }
    let identity = git2::Signature::now(&config.git.name, &config.git.email);
    out.push(check(
        identity.is_ok() && config.git.email.contains('@'),
        "git identity",
        format!("{} <{}>", config.git.name, config.git.email),
    ));
    // The database is read, never changed: a new SQLite file is not created, and pending
    // migrations are reported, not applied.
    let url = config.database_url();
    let shown = crate::config::redact_url(&url);
    let missing_sqlite = url
        .strip_prefix("sqlite://")
        .map(|rest| std::path::Path::new(rest.split('?').next().unwrap_or(rest)))
        .filter(|path| !path.exists());
    if let Some(path) = missing_sqlite {
        out.push(check(
            true,
            "database",
            format!(
                "{} does not exist yet: `swarm up` or `swarm migrate` creates it",
                path.display()
            ),
        ));
    } else {
        match Store::connect_without_migrating(&url).await {
            Ok(store) => {
                let pending = store.pending_migrations().await;
                out.push(match pending {
                    Ok(p) if p.is_empty() => check(true, "database", format!("{shown} reachable, schema up to date")),
                    Ok(p) => check(
                        true,
                        "database",
                        format!("{shown} reachable; {} migration(s) to apply ({:?}): `swarm up` or `swarm migrate` applies them", p.len(), p),
                    ),
                    Err(e) => check(false, "database", crate::display::error_chain(&e)),
                });
                store.close().await;
            }
            Err(e) => out.push(check(false, "database", crate::display::error_chain(&e))),
        }
    }
    if config.runtime == crate::config::RuntimeKind::Kubernetes {
        out.extend(kubernetes(&config.kubernetes).await);
    }
    if let Some(gh) = &config.github {
        out.push(github(gh, secrets).await);
    }
    for p in &config.projects {
        let (repo, branch, dir, auth) = (
            p.repo.clone(),
            p.default_branch.clone(),
            tempfile::tempdir(),
            gitops::GitAuth::new(secrets.git_token.clone()),
        );
        let result = tokio::task::spawn_blocking(move || -> Result<Option<git2::Oid>, String> {
            let dir = dir.map_err(|e| e.to_string())?;
            let cache =
                git2::Repository::init_bare(dir.path()).map_err(|e| e.message().to_string())?;
            gitops::remote_head(&cache, &repo, &branch, &auth)
                .map_err(|e| crate::display::error_chain(&e))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let name = format!("project {}", p.name);
        out.push(match result {
            Ok(Some(head)) => check(
                true,
                name,
                format!(
                    "{} {} at {}",
                    crate::config::redact_url(&p.repo),
                    p.default_branch,
                    &head.to_string()[..10]
                ),
            ),
            Ok(None) => check(
                false,
                name,
                format!(
                    "{} is reachable but has no branch {}",
                    crate::config::redact_url(&p.repo),
                    p.default_branch
                ),
            ),
            Err(e) => check(false, name, e),
        });
    }
    out
}

/// The Kubernetes runtime, with the credentials the doctor runs with (the engine's own in its
/// pod): the API server answers, the namespace and the workers' Secret exist (read as metadata
/// only: no secret value reaches the doctor), and the API server allows each of
/// [`ENGINE_PERMISSIONS`](crate::runtime::kubernetes::ENGINE_PERMISSIONS), by a
/// SelfSubjectAccessReview each.
async fn kubernetes(cfg: &crate::config::KubernetesConfig) -> Vec<Check> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Api, PostParams};

    let ns = cfg.namespace.as_str();
    let client = match crate::runtime::kubernetes::client(cfg).await {
        Ok(c) => c,
        Err(e) => {
            return vec![check(
                false,
                "kubernetes: API server",
                crate::display::error_chain(&e),
            )]
        }
    };
    let mut out = Vec::new();
    match client.apiserver_version().await {
        Ok(v) => out.push(check(
            true,
            "kubernetes: API server",
            format!("{} answers", v.git_version),
        )),
        Err(e) => {
            out.push(check(
                false,
                "kubernetes: API server",
                format!("cannot reach it: {}", crate::display::error_chain(&e)),
            ));
            return out;
        }
    }
    let forbidden = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    let name = format!("kubernetes: namespace {ns}");
    out.push(match Api::<Namespace>::all(client.clone()).get_metadata_opt(ns).await {
        Ok(Some(_)) => check(true, name, "exists"),
        Ok(None) => check(false, name, format!("does not exist: create it (deploy/base/namespace.yaml) or set [kubernetes] namespace")),
        // A namespaced Role cannot grant reading Namespaces: the checks below still tell.
        Err(e) if forbidden(&e) => check(true, name, "not readable with these credentials (a namespaced Role cannot grant it); the lines below check the namespace's use"),
        Err(e) => check(false, name, crate::display::error_chain(&e)),
    });
    let name = format!("kubernetes: Secret {}", cfg.secret);
    out.push(match Api::<Secret>::namespaced(client.clone(), ns).get_metadata_opt(&cfg.secret).await {
        Ok(Some(_)) => check(true, name, format!("exists in {ns}")),
        Ok(None) => check(false, name, format!("not found in namespace {ns}: every worker pod would fail with CreateContainerConfigError; create it (see deploy/overlays/example) or set [kubernetes] secret")),
        // The engine's Role does not grant reading Secrets, on purpose.
        Err(e) if forbidden(&e) => check(true, name, "not checked: these credentials may not read Secrets (the engine's Role does not grant it); run the doctor with your own kubeconfig to check it"),
        Err(e) => check(false, name, crate::display::error_chain(&e)),
    });
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    for (group, resource, verbs) in crate::runtime::kubernetes::ENGINE_PERMISSIONS {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (*resource, None),
        };
        let shown = match (&subresource, group.is_empty()) {
            (Some(sub), _) => format!("{resource}/{sub}"),
            (None, true) => resource.to_string(),
            (None, false) => format!("{resource}.{group}"),
        };
        for verb in *verbs {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(ns.to_string()),
                        verb: Some(verb.to_string()),
                        group: Some(group.to_string()),
                        resource: Some(resource.to_string()),
                        subresource: subresource.clone(),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let name = format!("kubernetes: {verb} {shown}");
            out.push(
                match reviews.create(&PostParams::default(), &review).await {
                    Ok(r) => match r.status {
                        Some(s) if s.allowed => check(true, name, format!("allowed in {ns}")),
                        Some(s) => check(
                            false,
                            name,
                            format!(
                                "denied in {ns}{}: grant it (deploy/base/role.yaml)",
                                s.reason
                                    .filter(|r| !r.is_empty())
                                    .map(|r| format!(" ({r})"))
                                    .unwrap_or_default()
                            ),
                        ),
                        None => check(
                            false,
                            name,
                            "the API server did not answer the access review",
                        ),
                    },
                    Err(e) => check(false, name, crate::display::error_chain(&e)),
                },
            );
        }
    }
    out
}

/// GitHub: one authenticated request (`GET /user` for a token, `GET /app` with the App's JWT)
/// says whether the credentials work. They are never printed.
async fn github(cfg: &crate::config::GitHubConfig, secrets: &crate::config::Secrets) -> Check {
    let result = match crate::forge::github::GitHub::new(cfg, secrets) {
        Ok(gh) => gh.whoami().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(who) => check(
            true,
            "github: credentials",
            format!("{} accepts them: {who}", cfg.api_url),
        ),
        Err(e) => check(
            false,
            "github: credentials",
            crate::display::error_chain(&e),
        ),
    }
}
