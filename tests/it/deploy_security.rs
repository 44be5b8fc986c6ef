//! `deploy/`: the namespace enforces the Pod Security "restricted" profile, and every pod that
//! runs there meets it: the engine, Postgres and the worker Job that `build_job` makes, checked
//! against the published profile control by control. The NetworkPolicies select the pods they
//! mean to and no others, and workers get out only to DNS and to 443/22 outside the cluster.
//! I/O: what `deploy` does (kubectl on a temporary copy).

use std::collections::BTreeMap;
use std::net::IpAddr;

use coding_swarm::config::{AgentProfile, KubernetesConfig};
use coding_swarm::runtime::kubernetes::build_job;
use coding_swarm::runtime::Launch;
use coding_swarm::worker::WorkerTask;
use ipnet::IpNet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, SecurityContext};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::deploy::{engine_config, find, overlay, typed};

/// The worker Job the engine would start with the overlay's `[kubernetes]` table. The Launch
/// is built here only, so a change to its fields is a change to this one function.
fn worker_job(cfg: &KubernetesConfig) -> Job {
    let launch = Launch {
        adopt_only: false,
        task_id: 7,
        attempt: 1,
        run_name: "webapp-hello-0a1b2c3d-g1-a1".into(),
        deadline: chrono::Utc::now() + chrono::Duration::minutes(45),
        task: WorkerTask {
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
            agent: AgentProfile::default_claude(),
            git_name: "coding-swarm".into(),
            git_email: "coding-swarm@example.com".into(),
        },
    };
    build_job(&launch, cfg)
}

/// Violations of the Pod Security Standards' "restricted" profile (which includes "baseline"),
/// as published at https://kubernetes.io/docs/concepts/security/pod-security-standards/ for
/// Linux pods. Control by control:
/// - HostProcess: windowsOptions.hostProcess unset or false (pod and every container).
/// - Host Namespaces: hostNetwork, hostPID, hostIPC unset or false.
/// - Privileged Containers: privileged unset or false.
/// - Capabilities: drop must contain ALL; add only NET_BIND_SERVICE (restricted).
/// - HostPath Volumes, and Volume Types: only configMap, csi, downwardAPI, emptyDir,
///   ephemeral, persistentVolumeClaim, projected, secret (restricted).
/// - Host Ports: hostPort unset or 0.
/// - AppArmor: appArmorProfile.type unset, RuntimeDefault or Localhost (the annotation form is
///   checked by `check_restricted_metadata`).
/// - SELinux: seLinuxOptions.type unset, container_t, container_init_t, container_kvm_t or
///   container_engine_t; user and role unset.
/// - /proc Mount Type: procMount unset or Default.
/// - Seccomp: RuntimeDefault or Localhost, on the pod or on every container; never Unconfined.
/// - Sysctls: only the safe set.
/// - Privilege Escalation: allowPrivilegeEscalation false on every container.
/// - Running as Non-root: runAsNonRoot true on the pod or on every container, never false.
/// - Running as Non-root user: runAsUser never 0.
pub fn check_restricted(pod: &PodSpec) -> Vec<String> {
    const SAFE_SYSCTLS: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    const VOLUMES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    const SELINUX_TYPES: &[&str] = &[
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut v = Vec::new();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        v.push("host namespaces: hostNetwork, hostPID and hostIPC must be unset or false".into());
    }
    let psc = pod.security_context.clone().unwrap_or_default();
    if psc.windows_options.and_then(|w| w.host_process) == Some(true) {
        v.push("HostProcess: the pod sets windowsOptions.hostProcess".into());
    }
    if let Some(se) = &psc.se_linux_options {
        if se.user.is_some()
            || se.role.is_some()
            || se
                .type_
                .as_deref()
                .is_some_and(|t| !SELINUX_TYPES.contains(&t))
        {
            v.push(format!("SELinux: the pod's seLinuxOptions {se:?}"));
        }
    }
    if let Some(a) = &psc.app_armor_profile {
        if !matches!(a.type_.as_str(), "RuntimeDefault" | "Localhost") {
            v.push(format!("AppArmor: the pod's profile is {}", a.type_));
        }
    }
    for s in psc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v.push(format!("sysctls: {} is not a safe sysctl", s.name));
        }
    }
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|s| s.type_.clone());
    if pod_seccomp
        .as_deref()
        .is_some_and(|t| !matches!(t, "RuntimeDefault" | "Localhost"))
    {
        v.push(format!(
            "seccomp: the pod's profile is {}",
            pod_seccomp.clone().unwrap()
        ));
    }
    if psc.run_as_non_root == Some(false) {
        v.push("runAsNonRoot: the pod sets it to false".into());
    }
    if psc.run_as_user == Some(0) {
        v.push("runAsUser: the pod runs as 0".into());
    }
    for vol in pod.volumes.iter().flatten() {
        let json = serde_json::to_value(vol).unwrap();
        for source in json.as_object().unwrap().keys().filter(|k| *k != "name") {
            if !VOLUMES.contains(&source.as_str()) {
                v.push(format!(
                    "volume types: volume {} is a {source} volume",
                    vol.name
                ));
            }
        }
    }
    // Containers, init containers and ephemeral containers alike.
    let mut containers: Vec<(String, Option<SecurityContext>, Vec<i32>)> = Vec::new();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let host_ports = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.host_port)
            .collect();
        containers.push((c.name.clone(), c.security_context.clone(), host_ports));
    }
    for c in pod.ephemeral_containers.iter().flatten() {
        let host_ports = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.host_port)
            .collect();
        containers.push((c.name.clone(), c.security_context.clone(), host_ports));
    }
    for (name, sc, host_ports) in containers {
        let sc = sc.unwrap_or_default();
        if host_ports.iter().any(|p| *p != 0) {
            v.push(format!("host ports: container {name} has a hostPort"));
        }
        if sc.privileged == Some(true) {
            v.push(format!("privileged: container {name} is privileged"));
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            v.push(format!("HostProcess: container {name}"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|c| c == "ALL") {
            v.push(format!("capabilities: container {name} does not drop ALL"));
        }
        if caps.add.iter().flatten().any(|c| c != "NET_BIND_SERVICE") {
            v.push(format!(
                "capabilities: container {name} adds {:?}",
                caps.add
            ));
        }
        if let Some(se) = &sc.se_linux_options {
            if se.user.is_some()
                || se.role.is_some()
                || se
                    .type_
                    .as_deref()
                    .is_some_and(|t| !SELINUX_TYPES.contains(&t))
            {
                v.push(format!("SELinux: container {name} sets {se:?}"));
            }
        }
        if let Some(a) = &sc.app_armor_profile {
            if !matches!(a.type_.as_str(), "RuntimeDefault" | "Localhost") {
                v.push(format!("AppArmor: container {name} has {}", a.type_));
            }
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            v.push(format!(
                "/proc mount type: container {name} has {:?}",
                sc.proc_mount
            ));
        }
        match sc
            .seccomp_profile
            .as_ref()
            .map(|s| s.type_.as_str())
            .or(pod_seccomp.as_deref())
        {
            Some("RuntimeDefault" | "Localhost") => {}
            other => v.push(format!("seccomp: container {name} runs with {other:?}")),
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!(
                "allowPrivilegeEscalation: container {name} does not set false"
            ));
        }
        match sc.run_as_non_root.or(psc.run_as_non_root) {
            Some(true) => {}
            _ => v.push(format!(
                "runAsNonRoot: container {name} is not held to true"
            )),
        }
        if sc.run_as_user == Some(0) {
            v.push(format!("runAsUser: container {name} runs as 0"));
        }
    }
    v
}

/// AppArmor's annotation form (container.apparmor.security.beta.kubernetes.io/<name>).
fn check_restricted_metadata(template: &PodTemplateSpec) -> Vec<String> {
    let annotations = template
        .metadata
        .clone()
        .unwrap_or_default()
        .annotations
        .unwrap_or_default();
    annotations
        .iter()
        .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
        .filter(|(_, v)| *v != "runtime/default" && !v.starts_with("localhost/"))
        .map(|(k, v)| format!("AppArmor: {k}={v}"))
        .collect()
}

fn check_template(what: &str, template: &PodTemplateSpec) {
    let mut v = check_restricted(template.spec.as_ref().unwrap());
    v.extend(check_restricted_metadata(template));
    assert!(
        v.is_empty(),
        "{what} breaks the restricted profile:\n{}",
        v.join("\n")
    );
}

#[test]
fn the_namespace_enforces_restricted_and_every_pod_meets_it() {
    let objects = overlay();
    let config = engine_config(&objects);
    let ns = find(&objects, "Namespace", &config.kubernetes.namespace);
    for mode in ["enforce", "audit", "warn"] {
        let labels = &ns["metadata"]["labels"];
        assert_eq!(
            labels[format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
        let version = labels[format!("pod-security.kubernetes.io/{mode}-version")]
            .as_str()
            .unwrap();
        assert!(
            version == "latest" || version.starts_with("v1."),
            "{mode}-version {version}"
        );
    }
    let mut templates = 0;
    for o in objects.iter().filter(|o| o["spec"]["template"].is_object()) {
        check_template(
            &format!("{} {}", o["kind"], o["metadata"]["name"]),
            &typed(&o["spec"]["template"]),
        );
        templates += 1;
    }
    assert_eq!(templates, 2, "the engine and Postgres");
    let job = worker_job(&config.kubernetes);
    check_template("the worker Job", &job.spec.unwrap().template);
}

#[test]
fn the_restricted_check_catches_each_control() {
    let good = worker_job(&KubernetesConfig::default())
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(check_restricted(&good), Vec::<String>::new());
    type Break = fn(&mut PodSpec);
    fn sc(p: &mut PodSpec) -> &mut SecurityContext {
        p.containers[0].security_context.as_mut().unwrap()
    }
    let cases: Vec<(&str, Break)> = vec![
        ("host namespaces", |p| p.host_pid = Some(true)),
        ("privileged", |p| sc(p).privileged = Some(true)),
        ("capabilities", |p| {
            sc(p).capabilities.as_mut().unwrap().add = Some(vec!["SYS_ADMIN".into()])
        }),
        ("capabilities", |p| sc(p).capabilities = None),
        ("volume types", |p| {
            p.volumes.as_mut().unwrap()[0] = serde_json::from_value(
                serde_json::json!({"name": "workspace", "hostPath": {"path": "/"}}),
            )
            .unwrap()
        }),
        ("host ports", |p| {
            p.containers[0].ports = Some(vec![serde_json::from_value(
                serde_json::json!({"containerPort": 80, "hostPort": 80}),
            )
            .unwrap()])
        }),
        ("AppArmor", |p| {
            sc(p).app_armor_profile =
                Some(serde_json::from_value(serde_json::json!({"type": "Unconfined"})).unwrap())
        }),
        ("SELinux", |p| {
            sc(p).se_linux_options =
                Some(serde_json::from_value(serde_json::json!({"type": "spc_t"})).unwrap())
        }),
        ("/proc mount type", |p| {
            sc(p).proc_mount = Some("Unmasked".into())
        }),
        ("seccomp", |p| {
            sc(p).seccomp_profile.as_mut().unwrap().type_ = "Unconfined".into()
        }),
        ("seccomp", |p| {
            sc(p).seccomp_profile = None;
            p.security_context.as_mut().unwrap().seccomp_profile = None;
        }),
        ("sysctls", |p| {
            p.security_context.as_mut().unwrap().sysctls = Some(vec![serde_json::from_value(
                serde_json::json!({"name": "kernel.msgmax", "value": "1"}),
            )
            .unwrap()])
        }),
        ("allowPrivilegeEscalation", |p| {
            sc(p).allow_privilege_escalation = None
        }),
        ("runAsNonRoot", |p| sc(p).run_as_non_root = Some(false)),
        ("runAsUser", |p| {
            p.security_context.as_mut().unwrap().run_as_user = Some(0)
        }),
        ("HostProcess", |p| {
            sc(p).windows_options =
                Some(serde_json::from_value(serde_json::json!({"hostProcess": true})).unwrap())
        }),
    ];
    for (control, break_it) in cases {
        let mut pod = good.clone();
        break_it(&mut pod);
        let v = check_restricted(&pod);
        assert!(
            v.iter().any(|m| m.starts_with(control)),
            "{control} not caught: {v:?}"
        );
    }
}

/// A missing selector selects everything, as the API server reads it.
fn selects(selector: &Option<LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let selector = selector.clone().unwrap_or_default();
    Selector::try_from(selector).unwrap().matches(labels)
}

fn pod_labels(o: &Value) -> BTreeMap<String, String> {
    typed(&o["spec"]["template"]["metadata"]["labels"])
}

fn contains(net: &IpNet, addr: &str) -> bool {
    net.contains(&addr.parse::<IpAddr>().unwrap())
}

#[test]
fn the_worker_policy_selects_only_workers_and_lets_them_out_to_dns_443_and_22() {
    let objects = overlay();
    let config = engine_config(&objects);
    let policy: NetworkPolicy = typed(find(&objects, "NetworkPolicy", "coding-swarm-worker"));
    let spec = policy.spec.unwrap();
    let job = worker_job(&config.kubernetes);
    let worker = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert!(
        selects(&spec.pod_selector, &worker),
        "the worker pods: {worker:?}"
    );
    for name in ["coding-swarm-engine", "postgres"] {
        let o = objects
            .iter()
            .find(|o| o["metadata"]["name"] == name && o["spec"]["template"].is_object())
            .unwrap();
        assert!(
            !selects(&spec.pod_selector, &pod_labels(o)),
            "it selects {name}"
        );
    }
    let types = spec.policy_types.unwrap();
    assert!(types.contains(&"Ingress".to_string()) && types.contains(&"Egress".to_string()));
    assert!(
        spec.ingress.unwrap_or_default().is_empty(),
        "no ingress at all"
    );

    let egress = spec.egress.unwrap();
    let (mut dns, mut out) = (false, false);
    for rule in &egress {
        // A rule without `to` or without `ports` would allow every address or every port.
        let to = rule
            .to
            .as_ref()
            .filter(|t| !t.is_empty())
            .expect("every rule names where");
        let ports: Vec<(String, String)> = rule
            .ports
            .as_ref()
            .filter(|p| !p.is_empty())
            .expect("every rule names its ports")
            .iter()
            .map(|p| {
                (
                    p.protocol.clone().unwrap_or("TCP".into()),
                    serde_json::to_value(&p.port).unwrap().to_string(),
                )
            })
            .collect();
        if ports.iter().all(|(_, port)| port == "53") {
            // DNS: the cluster's DNS pods only.
            for peer in to {
                assert!(peer.ip_block.is_none());
                let ns = &peer.namespace_selector;
                assert!(ns.is_some(), "DNS in every namespace");
                assert!(selects(
                    ns,
                    &BTreeMap::from([("kubernetes.io/metadata.name".into(), "kube-system".into())])
                ));
                assert!(!selects(
                    ns,
                    &BTreeMap::from([(
                        "kubernetes.io/metadata.name".into(),
                        config.kubernetes.namespace.clone()
                    )])
                ));
                assert!(selects(
                    &peer.pod_selector,
                    &BTreeMap::from([("k8s-app".into(), "kube-dns".into())])
                ));
            }
            dns = true;
            continue;
        }
        let mut want = vec![
            ("TCP".to_string(), "443".to_string()),
            ("TCP".into(), "22".into()),
        ];
        let mut got = ports.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "outside the cluster: 443 and 22 only");
        for peer in to {
            let block = peer
                .ip_block
                .as_ref()
                .expect("outside the cluster: address blocks only");
            let cidr: IpNet = block.cidr.parse().unwrap();
            let except: Vec<IpNet> = block
                .except
                .iter()
                .flatten()
                .map(|e| e.parse().unwrap())
                .collect();
            for e in &except {
                assert!(
                    cidr.contains(e),
                    "{e} is outside {cidr}: the API server refuses it"
                );
            }
            // The metadata service, and the placeholders for the pod and service CIDRs.
            let excluded = |a: &str| !contains(&cidr, a) || except.iter().any(|e| contains(e, a));
            for addr in [
                "169.254.169.254",
                "10.96.0.1",
                "10.244.1.5",
                "172.20.0.10",
                "192.168.1.1",
                "100.64.0.1",
                "fd00:ec2::254",
                "fe80::1",
            ] {
                assert!(excluded(addr), "{addr} is reachable through {cidr}");
            }
            // GitHub stays reachable.
            let github = if cidr.addr().is_ipv4() {
                "140.82.112.3"
            } else {
                "2606:50c0:8000::154"
            };
            assert!(
                !excluded(github),
                "{github} is not reachable through {cidr}"
            );
        }
        out = true;
    }
    assert!(dns && out && egress.len() == 2, "{egress:?}");
}

#[test]
fn only_the_engine_reaches_postgres_and_the_engine_takes_http_only() {
    let objects = overlay();
    let config = engine_config(&objects);
    let engine = pod_labels(find(&objects, "Deployment", "coding-swarm-engine"));
    let postgres = pod_labels(find(&objects, "StatefulSet", "postgres"));
    let worker = worker_job(&config.kubernetes)
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();

    let p: NetworkPolicy = typed(find(&objects, "NetworkPolicy", "coding-swarm-postgres"));
    let spec = p.spec.unwrap();
    assert!(selects(&spec.pod_selector, &postgres) && !selects(&spec.pod_selector, &engine));
    let ingress = spec.ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    let from = ingress[0].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    let peer = &from[0].pod_selector;
    assert!(peer.is_some() && from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
    assert!(selects(peer, &engine) && !selects(peer, &worker) && !selects(peer, &postgres));
    assert_eq!(
        serde_json::to_value(&ingress[0].ports.as_ref().unwrap()[0].port).unwrap(),
        5432
    );

    let e: NetworkPolicy = typed(find(&objects, "NetworkPolicy", "coding-swarm-engine"));
    let spec = e.spec.unwrap();
    assert!(selects(&spec.pod_selector, &engine) && !selects(&spec.pod_selector, &worker));
    let ports: Vec<Value> = spec
        .ingress
        .unwrap()
        .iter()
        .flat_map(|r| r.ports.clone().unwrap())
        .map(|p| serde_json::to_value(p.port).unwrap())
        .collect();
    assert_eq!(ports, ["http"]);
}

#[test]
fn jobs_never_mount_the_engines_secret() {
    let objects = overlay();
    let config = engine_config(&objects);
    let job = serde_json::to_value(worker_job(&config.kubernetes)).unwrap();
    let engine_secret = objects
        .iter()
        .find(|o| {
            o["kind"] == "Secret" && o["metadata"]["name"] != config.kubernetes.secret.as_str()
        })
        .unwrap();
    let name = engine_secret["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("coding-swarm-engine-secrets"));
    let text = job.to_string();
    assert!(!text.contains("coding-swarm-engine-secrets"), "{text}");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
        config.kubernetes.secret.as_str()
    );
}
