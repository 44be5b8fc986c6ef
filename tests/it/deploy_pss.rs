//! Pod Security: the namespace enforces the "restricted" profile, and every pod that runs there
//! meets it: the engine, Postgres and the worker Job that `build_job` makes, checked against the
//! published profile control by control; and the check itself catches each control broken.
//! I/O: what `deploy` does (kubectl on a temporary copy).

use coding_swarm::config::KubernetesConfig;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, SecurityContext};

use crate::deploy::{engine_config, find, overlay, typed, worker_job};

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
