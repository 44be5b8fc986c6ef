//! The NetworkPolicies of `deploy/components/networkpolicy`, rendered in the example overlay:
//! each selects the pods it means to and no others (the worker pods by the labels `build_job`
//! puts on them, never the engine), workers get out only to DNS and to 443/22 outside the
//! cluster, only the engine reaches Postgres; and no Job mounts the engine's Secret.
//! I/O: what `deploy` does (kubectl on a temporary copy).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::deploy::{engine_config, find, overlay, typed, worker_job};

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
    // The workers' Secret, key by key, in every container of the pod.
    let pod = &job["spec"]["template"]["spec"];
    let containers = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap());
    for c in containers {
        let refs: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
            .collect();
        assert!(!refs.is_empty(), "{c}");
        assert!(
            refs.iter().all(|n| *n == config.kubernetes.secret.as_str()),
            "{refs:?}"
        );
    }
}
