//! Integration tests: one binary, one module per capability. They talk to a real Postgres
//! (`SWARM_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`), real SQLite files,
//! real bare git repositories and real worker processes.

mod support;

mod api;
mod checkout;
mod claude;
mod claude_limits;
mod cli;
mod dashboard;
mod dashboard_insight;
mod deploy;
mod deploy_monitoring;
mod deploy_network;
mod deploy_overlay;
mod deploy_pss;
mod doctor;
mod engine;
mod epics;
mod faults;
mod fuzz;
mod ghapi;
mod githttp;
mod github;
mod github_commands;
mod github_outbox;
mod green;
mod hooks;
mod kube;
mod kubeapi;
mod kubeops;
mod kubewatch;
mod layers;
mod merges;
mod model;
mod ops;
#[cfg(feature = "otel")]
mod otel;
mod payloads;
mod pgtls;
mod pr_loop;
mod pulls;
mod readiness;
mod rebuild;
mod runtime;
mod sandbox;
mod schema;
mod stats;
mod steer;
mod store;
mod sync;
mod validate;
mod webhook_answers;
mod webhooks;
mod worker;
mod worker_push;
