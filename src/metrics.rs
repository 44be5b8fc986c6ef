//! Prometheus metrics with stable names: tasks by status, dispatch latency, runs by outcome,
//! sync errors, leader state. Pure bookkeeping; the HTTP server encodes them.

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

/// The engine's metrics.
pub struct Metrics {
    registry: Registry,
    pub tasks: Family<StatusLabel, Gauge>,
    pub dispatch_latency: Histogram,
    pub runs: Family<OutcomeLabel, Counter>,
    pub sync_errors: Family<ProjectLabel, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("swarm");
        let tasks = Family::<StatusLabel, Gauge>::default();
        registry.register("tasks", "Tasks by status", tasks.clone());
        let dispatch_latency =
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0]);
        registry.register(
            "dispatch_latency_seconds",
            "From a task becoming pending to its launch",
            dispatch_latency.clone(),
        );
        let runs = Family::<OutcomeLabel, Counter>::default();
        registry.register("runs", "Finished runs by outcome", runs.clone());
        let sync_errors = Family::<ProjectLabel, Counter>::default();
        registry.register(
            "sync_errors",
            "Failed sync passes by project",
            sync_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this engine is the leader",
            leader.clone(),
        );
        Self {
            registry,
            tasks,
            dispatch_latency,
            runs,
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

    pub fn run_finished(&self, outcome: &str) {
        self.runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn sync_failed(&self, project: &str) {
        self.sync_errors
            .get_or_create(&ProjectLabel {
                project: project.into(),
            })
            .inc();
    }

    /// The OpenMetrics text of all metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
