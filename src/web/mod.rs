//! The engine's HTTP server: `/healthz` (the process answers, from its start), `/readyz` (it
//! leads, and the store and the runtime answer) and `/metrics` (Prometheus). I/O at the edge; handlers are thin.

pub mod metrics;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub use metrics::Metrics;

use crate::store::Store;

/// Whether the runtime can start jobs, as a boxed check (the runtime's type stays out of here).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Set once this engine leads and its runtime is up; until then it is not ready.
    pub runtime_ready: Arc<std::sync::OnceLock<ReadyCheck>>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<WebState>) -> impl IntoResponse {
    if let Err(e) = s.store.counts().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n"));
    }
    let Some(check) = s.runtime_ready.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for leadership\n".to_string(),
        );
    };
    if let Err(e) = check().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("runtime: {e}\n"));
    }
    (StatusCode::OK, "ready\n".to_string())
}

async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    if let Ok(c) = s.store.counts().await {
        s.metrics.set_tasks(&c);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Serves `router` on `listen` until `shutdown` turns true.
pub async fn serve(
    listen: &str,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!("HTTP on {}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}
