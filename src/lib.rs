//! coding-swarm: a GitOps-driven reconciler that runs AI coding agents on your repositories.
//!
//! The desired work lives in git (`.ai/tasks/*.yaml`), the observed state in a database, and one
//! engine makes them agree: [`sync`] reads repositories into the [`store`], [`engine`] dispatches
//! pending tasks to a [`runtime`], and the [`worker`] runs one task inside each job.

pub mod config;
pub mod demo;
pub mod doctor;
pub mod engine;
pub mod epic;
pub mod forge;
pub mod gitops;
pub mod runtime;
pub mod secrets;
pub mod spec;
pub mod store;
pub mod sync;
pub mod web;
pub mod worker;
