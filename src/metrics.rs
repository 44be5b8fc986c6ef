//! Prometheus metrics with stable names, by Prometheus conventions (`_total` counters,
//! `_seconds` histograms, `_timestamp_seconds`): build info, tasks by status, queue wait and
//! dispatch latency, run duration and runs ended by class, consecutive failures and agent cost
//! by project, agent pauses, the GitHub outbox and its writes, webhook deliveries, syncs, and
//! leadership. Pure bookkeeping; the HTTP server encodes them, and sets the gauges that mirror
//! the store when it is scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectLabel {
    pub project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectAgentLabel {
    pub project: String,
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub event: String,
    pub answer: String,
}

const WAIT_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];
const RUN_BUCKETS: [f64; 10] = [
    1.0, 5.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

/// The engine's metrics.
pub struct Metrics {
    registry: Registry,
    pub tasks: Family<StatusLabel, Gauge>,
    /// From a task becoming pending (its last change) to its claim.
    pub queue_wait: Histogram,
    /// From a claim to its job's start.
    pub dispatch_latency: Histogram,
    pub run_duration: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    pub runs: Family<OutcomeLabel, Counter>,
    pub runs_ended: Family<ClassLabel, Counter>,
    pub consecutive_failures: Family<ProjectLabel, Gauge>,
    pub agent_cost: Family<ProjectAgentLabel, Counter<f64, AtomicU64>>,
    pub agent_paused: Family<AgentLabel, Gauge>,
    pub outbox_depth: Gauge,
    pub github_writes: Family<WriteLabel, Counter>,
    pub webhook_deliveries: Family<DeliveryLabel, Counter>,
    pub last_sync_success: Family<ProjectLabel, Gauge<f64, AtomicU64>>,
    pub sync_errors: Family<ProjectLabel, Counter>,
    pub leader: Gauge,
    /// Every family registered, with its Prometheus type (see [`Metrics::families`]).
    families: Vec<(String, &'static str)>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("swarm");
        let mut families: Vec<(String, &'static str)> = Vec::new();
        let mut kind = |name: &str, k: &'static str| families.push((format!("swarm_{name}"), k));
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        kind("build_info", "gauge");
        r.register("build_info", "The engine's version (always 1)", build_info);
        let tasks = Family::<StatusLabel, Gauge>::default();
        kind("tasks", "gauge");
        r.register("tasks", "Tasks by status", tasks.clone());
        let queue_wait = Histogram::new(WAIT_BUCKETS);
        kind("queue_wait_seconds", "histogram");
        r.register(
            "queue_wait_seconds",
            "From a task becoming pending (its last change) to its claim",
            queue_wait.clone(),
        );
        let dispatch_latency = Histogram::new(WAIT_BUCKETS);
        kind("dispatch_latency_seconds", "histogram");
        r.register(
            "dispatch_latency_seconds",
            "From a task's claim to its job's start",
            dispatch_latency.clone(),
        );
        let run_duration =
            Family::<OutcomeLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                run_histogram,
            );
        kind("run_duration_seconds", "histogram");
        r.register(
            "run_duration_seconds",
            "How long runs took, by outcome",
            run_duration.clone(),
        );
        let runs = Family::<OutcomeLabel, Counter>::default();
        kind("runs", "counter");
        r.register("runs", "Finished runs by outcome", runs.clone());
        let runs_ended = Family::<ClassLabel, Counter>::default();
        kind("runs_ended", "counter");
        r.register(
            "runs_ended",
            "Runs ended, by class: succeeded, or the error class",
            runs_ended.clone(),
        );
        let consecutive_failures = Family::<ProjectLabel, Gauge>::default();
        kind("consecutive_run_failures", "gauge");
        r.register(
            "consecutive_run_failures",
            "Final results of the project that failed in a row (0 after a success)",
            consecutive_failures.clone(),
        );
        let agent_cost = Family::<ProjectAgentLabel, Counter<f64, AtomicU64>>::default();
        kind("agent_cost_usd", "counter");
        r.register(
            "agent_cost_usd",
            "The cost agents reported, by project and agent profile",
            agent_cost.clone(),
        );
        let agent_paused = Family::<AgentLabel, Gauge>::default();
        kind("agent_paused", "gauge");
        r.register(
            "agent_paused",
            "1 while dispatch for the agent profile is paused by a rate or usage limit",
            agent_paused.clone(),
        );
        let outbox_depth = Gauge::default();
        kind("github_outbox_depth", "gauge");
        r.register(
            "github_outbox_depth",
            "GitHub writes waiting in the outbox",
            outbox_depth.clone(),
        );
        let github_writes = Family::<WriteLabel, Counter>::default();
        kind("github_writes", "counter");
        r.register(
            "github_writes",
            "GitHub writes by kind and result (written, retried, rate_limited, gave_up)",
            github_writes.clone(),
        );
        let webhook_deliveries = Family::<DeliveryLabel, Counter>::default();
        kind("webhook_deliveries", "counter");
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by event and answer",
            webhook_deliveries.clone(),
        );
        let last_sync_success = Family::<ProjectLabel, Gauge<f64, AtomicU64>>::default();
        kind("last_sync_success_timestamp_seconds", "gauge");
        r.register(
            "last_sync_success_timestamp_seconds",
            "When the project's last sync pass succeeded (Unix time)",
            last_sync_success.clone(),
        );
        let sync_errors = Family::<ProjectLabel, Counter>::default();
        kind("sync_errors", "counter");
        r.register(
            "sync_errors",
            "Failed sync passes by project",
            sync_errors.clone(),
        );
        let leader = Gauge::default();
        kind("leader", "gauge");
        r.register(
            "leader",
            "1 while this engine is the leader",
            leader.clone(),
        );
        drop(kind);
        Self {
            registry: r,
            families,
            tasks,
            queue_wait,
            dispatch_latency,
            run_duration,
            runs,
            runs_ended,
            consecutive_failures,
            agent_cost,
            agent_paused,
            outbox_depth,
            github_writes,
            webhook_deliveries,
            last_sync_success,
            sync_errors,
            leader,
        }
    }
}

impl Metrics {
    pub fn set_tasks(&self, c: &crate::model::Counts) {
        for (status, n) in [
            ("pending", c.pending),
            ("running", c.running),
            ("completed", c.completed),
        ] {
            self.tasks
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n as i64);
        }
    }

    /// A run ended with `outcome` (its label), its result's class (`succeeded` or the error
    /// class), the seconds it took and what it cost; `fin` when the result is final, with
    /// whether it succeeded (for the project's failures in a row).
    pub fn run_ended(&self, run: RunEnd<'_>) {
        self.runs
            .get_or_create(&OutcomeLabel {
                outcome: run.outcome.into(),
            })
            .inc();
        self.runs_ended
            .get_or_create(&ClassLabel {
                class: run.class.into(),
            })
            .inc();
        if let Some(seconds) = run.seconds {
            self.run_duration
                .get_or_create(&OutcomeLabel {
                    outcome: run.outcome.into(),
                })
                .observe(seconds);
        }
        if let Some(cost) = run.cost_usd.filter(|c| *c > 0.0) {
            self.agent_cost
                .get_or_create(&ProjectAgentLabel {
                    project: run.project.into(),
                    agent: run.agent.into(),
                })
                .inc_by(cost);
        }
        if let Some(succeeded) = run.final_success {
            let g = self.consecutive_failures.get_or_create(&ProjectLabel {
                project: run.project.into(),
            });
            if succeeded {
                g.set(0);
            } else {
                g.inc();
            }
        }
    }

    pub fn sync_failed(&self, project: &str) {
        self.sync_errors
            .get_or_create(&ProjectLabel {
                project: project.into(),
            })
            .inc();
    }

    pub fn sync_succeeded(&self, project: &str, unix_seconds: f64) {
        self.last_sync_success
            .get_or_create(&ProjectLabel {
                project: project.into(),
            })
            .set(unix_seconds);
    }

    /// The agent profiles paused now (all others 0).
    pub fn set_paused(&self, paused: &[String]) {
        self.agent_paused.clear();
        for agent in paused {
            self.agent_paused
                .get_or_create(&AgentLabel {
                    agent: agent.clone(),
                })
                .set(1);
        }
    }

    pub fn github_write(&self, kind: &str, result: &str) {
        self.github_writes
            .get_or_create(&WriteLabel {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn webhook_delivery(&self, event: &str, answer: &str) {
        self.webhook_deliveries
            .get_or_create(&DeliveryLabel {
                event: event.into(),
                answer: answer.into(),
            })
            .inc();
    }

    /// Every metric family the engine serves, by the name and type its `# TYPE` line has
    /// (counters' samples add `_total`; histograms' `_bucket`, `_sum`, `_count`). A family with
    /// no sample yet (no labels seen) is served without lines, as Prometheus expects.
    pub fn families(&self) -> &[(String, &'static str)] {
        &self.families
    }

    /// The OpenMetrics text of all metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One run's end, as the metrics count it.
pub struct RunEnd<'a> {
    pub project: &'a str,
    pub agent: &'a str,
    pub outcome: &'a str,
    pub class: &'a str,
    pub seconds: Option<f64>,
    pub cost_usd: Option<f64>,
    /// `Some(success)` when the result is final.
    pub final_success: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn failures_in_a_row_cost_writes_and_deliveries_are_counted() {
        let m = Metrics::default();
        let end = |success: bool, fin: bool, cost: Option<f64>| RunEnd {
            project: "p",
            agent: "claude",
            outcome: if success { "succeeded" } else { "failed" },
            class: if success { "succeeded" } else { "agent" },
            seconds: Some(12.0),
            cost_usd: cost,
            final_success: fin.then_some(success),
        };
        m.run_ended(end(false, true, Some(0.25)));
        m.run_ended(end(false, false, None));
        m.run_ended(end(false, true, Some(0.5)));
        let t = m.encode();
        assert_eq!(
            sample(&t, "swarm_consecutive_run_failures{project=\"p\"} "),
            Some(2.0),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                "swarm_agent_cost_usd_total{project=\"p\",agent=\"claude\"} "
            ),
            Some(0.75),
            "{t}"
        );
        assert_eq!(
            sample(&t, "swarm_runs_ended_total{class=\"agent\"} "),
            Some(3.0),
            "{t}"
        );
        m.run_ended(end(true, true, None));
        let t = m.encode();
        assert_eq!(
            sample(&t, "swarm_consecutive_run_failures{project=\"p\"} "),
            Some(0.0),
            "{t}"
        );
        m.github_write("comment", "gave_up");
        m.webhook_delivery("issue_comment", "accepted");
        m.set_paused(&["claude".into()]);
        m.set_paused(&[]);
        let t = m.encode();
        assert_eq!(
            sample(
                &t,
                "swarm_github_writes_total{kind=\"comment\",result=\"gave_up\"} "
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                "swarm_webhook_deliveries_total{event=\"issue_comment\",answer=\"accepted\"} "
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            sample(&t, "swarm_agent_paused{agent=\"claude\"} "),
            None,
            "a pause that ended: {t}"
        );
    }
}
