//! coding-swarm: a GitOps-driven reconciler that runs AI coding agents on your repositories.
//!
//! The desired work lives in git (`.ai/tasks/*.yaml`), the observed state in a database, and one
//! engine makes them agree: [`sync`] reads repositories into the [`store`], [`engine`] dispatches
//! pending tasks to a [`runtime`], and the [`worker`] runs one task inside each job. Every
//! decision is the pure [`model`]'s; [`app`] wires the parts together.
//!
//! The modules stack in layers; a module may use any module of a lower layer, never one of
//! its own or a higher one ([`LAYERS`], checked by a test and shown in the README).

pub mod app;
pub mod config;
pub mod demo;
pub mod display;
pub mod doctor;
pub mod engine;
pub mod epic;
pub mod forge;
pub mod gitops;
pub mod job;
pub mod metrics;
pub mod model;
pub mod report;
pub mod runtime;
pub mod secrets;
pub mod spec;
pub mod steer;
pub mod store;
pub mod sync;
pub mod web;
pub mod worker;

/// The layers of the crate, lowest first: a module may import modules of lower layers only.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("text", &["display"]),
    ("what lives in git", &["spec"]),
    ("the domain model, pure", &["model", "secrets"]),
    ("bookkeeping", &["metrics"]),
    ("configuration", &["config"]),
    ("the job contract", &["job"]),
    ("storage and git plumbing", &["store", "gitops"]),
    (
        "repositories in and out",
        &["sync", "report", "epic", "steer"],
    ),
    (
        "where jobs run, what runs in them, git hosts",
        &["runtime", "worker", "forge"],
    ),
    ("the reconcile loops", &["engine"]),
    ("HTTP", &["web"]),
    ("the doctor's checks and the demo", &["doctor", "demo"]),
    ("wiring and commands", &["app"]),
];
