//! `deploy/components/servicemonitor` and `prometheusrule`: the Prometheus Operator's objects,
//! which k8s-openapi does not have. They are read into the structs below, which cover the
//! fields of the CRDs (monitoring.coreos.com/v1) that the components use and refuse any other,
//! so a misspelled field fails as it would in the API server's strict field validation. The
//! ServiceMonitor scrapes the engine's metrics port; every alert's expression parses as PromQL
//! and names only metrics the engine serves. I/O: what `deploy` does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::{Selector, SelectorExt};
use promql_parser::parser::Expr;
use promql_parser::util::{parse_duration, walk_expr, ExprVisitor};
use serde::{Deserialize, Serialize};

use crate::deploy::{find, render, typed, DeployCopy};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    /// The name of a port of the selected Services.
    pub port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The metric families of a `/metrics` text, with their types (its `# TYPE` lines).
pub fn served_families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Whether a series of that name is one the engine serves (the families its metrics register):
/// a gauge by its name, a counter by `_total`, a histogram by `_bucket`, `_sum` and `_count`.
fn served(series: &str) -> bool {
    coding_swarm::metrics::Metrics::default()
        .families()
        .iter()
        .any(|(name, kind)| match *kind {
            "counter" => series == format!("{name}_total"),
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| series == format!("{name}{s}")),
            _ => series == name,
        })
}

/// The metric names an expression selects.
struct Names(Vec<String>);

impl ExprVisitor for Names {
    type Error = String;
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = vs
            .name
            .clone()
            .ok_or_else(|| format!("a selector without a metric name: {vs}"))?;
        self.0.push(name);
        Ok(true)
    }
}

fn rules() -> Vec<Rule> {
    let copy = DeployCopy::with_env_files();
    let objects = render(&copy.base_with("prometheusrule"));
    let rule: PrometheusRule = typed(find(&objects, "PrometheusRule", "coding-swarm"));
    rule.spec
        .groups
        .into_iter()
        .flat_map(|g| {
            assert!(!g.name.is_empty());
            g.rules
        })
        .collect()
}

#[test]
fn every_alert_parses_and_names_only_metrics_the_engine_serves() {
    let rules = rules();
    let mut by_metric: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rules {
        let expr =
            promql_parser::parser::parse(&r.expr).unwrap_or_else(|e| panic!("{}: {e}", r.alert));
        let mut names = Names(Vec::new());
        walk_expr(&mut names, &expr).unwrap_or_else(|e| panic!("{}: {e}", r.alert));
        assert!(!names.0.is_empty(), "{}", r.alert);
        for n in names.0 {
            assert!(served(&n), "{}: the engine serves no {n}", r.alert);
            by_metric.entry(n).or_default().push(r.alert.clone());
        }
        if let Some(f) = &r.for_ {
            parse_duration(f).unwrap_or_else(|e| panic!("{}: for: {e}", r.alert));
        }
        assert!(
            matches!(r.labels["severity"].as_str(), "warning" | "critical"),
            "{}",
            r.alert
        );
        assert!(!r.annotations["summary"].is_empty() && !r.annotations["description"].is_empty());
    }
    // What the alerts are for: engine not ready or leading, sync failing for a project, runs
    // failing in a row, the GitHub outbox backing up, an agent paused for over an hour.
    for metric in [
        "swarm_leader",
        "swarm_sync_errors_total",
        "swarm_last_sync_success_timestamp_seconds",
        "swarm_consecutive_run_failures",
        "swarm_github_outbox_depth",
        "swarm_agent_paused",
    ] {
        assert!(by_metric.contains_key(metric), "no alert on {metric}");
    }
    // deploy/README.md lists exactly these alerts, with their severity where it is critical.
    let readme = std::fs::read_to_string(crate::deploy::deploy_dir().join("README.md")).unwrap();
    let mut listed: Vec<(String, bool)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `Swarm"))
        .map(|l| {
            let (name, rest) = l.split_once('`').unwrap();
            (format!("Swarm{name}"), rest.starts_with(" (critical)"))
        })
        .collect();
    let mut alerts: Vec<(String, bool)> = rules
        .iter()
        .map(|r| (r.alert.clone(), r.labels["severity"] == "critical"))
        .collect();
    listed.sort();
    alerts.sort();
    assert_eq!(listed, alerts, "deploy/README.md's table of alerts");
    let paused = rules
        .iter()
        .find(|r| r.expr.contains("swarm_agent_paused"))
        .unwrap();
    let hold = parse_duration(paused.for_.as_deref().unwrap()).unwrap();
    assert!(
        hold >= std::time::Duration::from_secs(3600),
        "{:?}",
        paused.for_
    );
}

#[test]
fn the_service_monitor_scrapes_the_engines_metrics_port() {
    let copy = DeployCopy::with_env_files();
    let objects = render(&copy.base_with("servicemonitor"));
    let sm: ServiceMonitor = typed(find(&objects, "ServiceMonitor", "coding-swarm-engine"));
    let selector = Selector::try_from(sm.spec.selector).unwrap();
    let services: Vec<Service> = objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(typed)
        .filter(|s: &Service| selector.matches(s.metadata.labels.as_ref().unwrap()))
        .collect();
    assert_eq!(services.len(), 1, "the engine's Service only");
    assert_eq!(
        services[0].metadata.name.as_deref(),
        Some("coding-swarm-engine")
    );
    let port = services[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0].clone();
    assert_eq!(sm.spec.endpoints.len(), 1);
    let ep = &sm.spec.endpoints[0];
    assert_eq!(Some(&ep.port), port.name.as_ref());
    assert_eq!(ep.path.as_deref(), Some("/metrics"));
    assert_eq!(ep.interval.as_deref(), Some("30s"));
    // The Service's port leads to the container port the engine listens on ([http] listen).
    let d = find(&objects, "Deployment", "coding-swarm-engine");
    let target = serde_json::to_value(port.target_port.unwrap()).unwrap();
    let cport = d["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target)
        .unwrap_or_else(|| panic!("no container port {target}"));
    assert_eq!(cport["containerPort"], 8080);
}
