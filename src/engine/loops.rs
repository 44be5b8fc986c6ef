//! The engine's long-running loops beside dispatch: a sync loop per project (on a poll
//! interval, at once when triggered), the status reporter, and the file watch that triggers
//! syncs of repositories on this machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Notify};

use super::activate::after_sync;
use crate::config::{Config, ProjectConfig};
use crate::display::error_chain;
use crate::gitops::GitAuth;
use crate::metrics::Metrics;
use crate::store::Store;

/// What a sync pass needs.
#[derive(Clone)]
pub(super) struct Sync {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub auth: GitAuth,
}

impl Sync {
    /// One pass over `project`; false when it failed (the error is recorded for people).
    pub async fn once(&self, project: &ProjectConfig) -> bool {
        let span = tracing::info_span!("sync", project = %project.name);
        self.once_in_span(project).instrument(span).await
    }

    async fn once_in_span(&self, project: &ProjectConfig) -> bool {
        match crate::sync::sync_project(&self.store, &self.config.data_dir, project, &self.auth)
            .await
        {
            Ok(report) => {
                self.metrics
                    .sync_succeeded(&project.name, Utc::now().timestamp_millis() as f64 / 1000.0);
                if let Err(e) = after_sync(&self.store, &self.config, project, &report).await {
                    tracing::error!(project = %project.name, "cannot act on the sync: {e}");
                }
                if report.changed_files > 0 {
                    tracing::info!(project = %project.name, commit = %crate::display::short(&report.commit),
                        files = report.changed_files, changes = report.actions, bad_files = report.bad_files, "synced");
                }
                true
            }
            Err(e) => {
                let message = error_chain(&e);
                tracing::warn!(project = %project.name, "{message}");
                self.metrics.sync_failed(&project.name);
                let _ = self
                    .store
                    .record_sync_error(&project.name, &message, Utc::now())
                    .await;
                false
            }
        }
    }

    /// Syncs `project` every poll interval and whenever triggered; after failures, backs off
    /// exponentially up to ten poll intervals.
    pub async fn run(
        self,
        project: ProjectConfig,
        trigger: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        skip_first: bool,
    ) {
        let poll = self.config.poll_interval_for(&project);
        let mut failures = 0u32;
        let mut first = !skip_first;
        loop {
            if !first {
                let wait = if failures == 0 {
                    poll
                } else {
                    (poll / 4)
                        .saturating_mul(1 << failures.min(5))
                        .min(poll * 10)
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // At once: a trigger is a person or a webhook waiting. A burst coalesces
                    // all the same: the triggers that arrive while this sync runs leave one
                    // permit, so a burst costs at most one more pass (an unmoved pass is one
                    // ls-remote). It used to wait 50 ms first, a third of a push's way to its
                    // agent (BENCHMARKS.md, issue #17).
                    _ = trigger.notified() => {}
                    _ = shutdown.changed() => return,
                }
            }
            first = false;
            if self.once(&project).await {
                failures = 0;
            } else {
                failures += 1;
            }
        }
    }
}

/// How long the reporter lets finishing runs pile up before it commits their status files.
const REPORT_BATCH: Duration = Duration::from_millis(200);
/// How long dispatch must have been quiet before the reporter starts.
const REPORT_QUIET: Duration = Duration::from_millis(50);
/// The longest the reporter waits for dispatch to go quiet.
const REPORT_MAX_DEFER: Duration = Duration::from_secs(2);

/// When dispatch last claimed, launched or recorded a run end. The reporter waits for a quiet
/// moment, so its database and git work does not share the cores with a claim.
#[derive(Debug)]
pub(super) struct Activity(std::sync::Mutex<tokio::time::Instant>);

impl Default for Activity {
    fn default() -> Self {
        Self(std::sync::Mutex::new(tokio::time::Instant::now()))
    }
}

impl Activity {
    pub fn touch(&self) {
        if let Ok(mut at) = self.0.lock() {
            *at = tokio::time::Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.0
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or(Duration::MAX)
    }
}

/// How much longer the reporter waits, `waited` after it was woken, with dispatch quiet for
/// `quiet`: at least [`REPORT_BATCH`] (so one commit carries several runs), then until dispatch
/// has been quiet for [`REPORT_QUIET`], but never past [`REPORT_MAX_DEFER`]. `None`: go.
pub(super) fn report_delay(waited: Duration, quiet: Duration) -> Option<Duration> {
    if waited < REPORT_BATCH {
        return Some(REPORT_BATCH - waited);
    }
    if quiet >= REPORT_QUIET || waited >= REPORT_MAX_DEFER {
        return None;
    }
    Some((REPORT_QUIET - quiet).min(REPORT_MAX_DEFER - waited))
}

/// Commits status files whenever runs finish (batched: everything due at that moment goes in
/// one commit per project, once dispatch is quiet), and retries failed reports with backoff.
pub(super) async fn report(
    store: Store,
    config: Arc<Config>,
    auth: GitAuth,
    wake: Arc<Notify>,
    activity: Arc<Activity>,
    failing: Arc<AtomicU32>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1 << failures.min(6))
        };
        tokio::select! {
            _ = wake.notified() => {
                let woken = tokio::time::Instant::now();
                while let Some(d) = report_delay(woken.elapsed(), activity.idle_for()) {
                    tokio::time::sleep(d).await;
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let mut failed = false;
        for p in &config.projects {
            match crate::report::report_project(&store, &config, p, &auth)
                .instrument(tracing::info_span!("report", project = %p.name))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(project = %p.name, tasks = n, "status files committed"),
                Err(e) => {
                    failed = true;
                    tracing::warn!(project = %p.name, "{}", error_chain(&e));
                }
            }
        }
        failures = if failed { failures + 1 } else { 0 };
        failing.store(failures, Ordering::SeqCst);
    }
}

/// Watches the refs of the projects whose repository is on this machine and triggers their
/// sync on a change. The watcher must be kept alive.
pub(super) fn watch_local_repos(
    config: &Config,
    triggers: &HashMap<String, Arc<Notify>>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Option<notify::RecommendedWatcher> {
    let repos: Vec<(String, std::path::PathBuf)> = config
        .projects
        .iter()
        .filter_map(|p| crate::gitops::local_git_dir(&p.repo).map(|d| (p.name.clone(), d)))
        .collect();
    if repos.is_empty() {
        return None;
    }
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let watcher = match crate::sync::watch::watch_refs(&repos, tx) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch local repositories, polling only: {e}");
            return None;
        }
    };
    let triggers = triggers.clone();
    tasks.spawn(async move {
        while let Some(project) = rx.recv().await {
            if let Some(t) = triggers.get(&project) {
                t.notify_one();
            }
        }
    });
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_reporter_batches_then_waits_for_dispatch_to_go_quiet_but_not_for_ever() {
        // Woken: it lets runs pile up first, however quiet dispatch is.
        assert_eq!(
            report_delay(Duration::ZERO, Duration::MAX),
            Some(REPORT_BATCH)
        );
        assert_eq!(report_delay(150 * MS, Duration::MAX), Some(50 * MS));
        // Then it goes once dispatch has been quiet long enough...
        assert_eq!(report_delay(REPORT_BATCH, REPORT_QUIET), None);
        // ...and waits for the rest of the quiet while dispatch works.
        assert_eq!(report_delay(REPORT_BATCH, 10 * MS), Some(40 * MS));
        assert_eq!(report_delay(600 * MS, Duration::ZERO), Some(REPORT_QUIET));
        // A dispatch that never rests defers reporting by REPORT_MAX_DEFER at most.
        assert_eq!(report_delay(1990 * MS, Duration::ZERO), Some(10 * MS));
        assert_eq!(report_delay(REPORT_MAX_DEFER, Duration::ZERO), None);
    }
}
