//! The engine's HTTP server: `/healthz` (the process answers, from its start), `/readyz` (it
//! leads, and the store and the runtime answer) and `/metrics` (Prometheus). I/O at the edge; handlers are thin.

pub mod api;
pub mod auth;
pub mod pages;
pub mod stats;
pub mod transcript;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::gitops::GitAuth;
use crate::metrics::Metrics;
use crate::store::{Store, Stored};

/// Whether the runtime can start jobs, as a boxed check (the runtime's type stays out of here).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// GitHub webhooks: verified deliveries are stored in the database, where the leader
/// processes them.
#[derive(Clone)]
pub struct WebhookIn {
    pub secret: Vec<u8>,
}

/// A run's log, as a boxed lookup (the runtime's type stays out of here).
pub type LogsFn = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync,
>;

/// Reads a run's log from an offset on (see [`crate::runtime::Runtime::read_log`]), boxed.
pub type ReadLogFn = Arc<
    dyn Fn(
            String,
            u64,
        ) -> Pin<Box<dyn Future<Output = Result<crate::runtime::LogRead, String>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub struct WebState {
    /// GitHub webhooks, when configured.
    pub webhook: Option<WebhookIn>,
    pub store: Store,
    pub config: Arc<crate::config::Config>,
    pub metrics: Arc<Metrics>,
    /// Set once this engine leads and its runtime is up; until then it is not ready.
    pub runtime_ready: Arc<std::sync::OnceLock<ReadyCheck>>,
    /// Set with the runtime: reads a run's log.
    pub runtime_logs: Arc<std::sync::OnceLock<LogsFn>>,
    /// Set with the runtime: follows a run's log (the live transcript).
    pub runtime_read_log: Arc<std::sync::OnceLock<ReadLogFn>>,
    /// Task changes, for the dashboard's live updates (JSON lines).
    pub events: tokio::sync::broadcast::Sender<String>,
    /// Required of every request when the server listens beyond this machine.
    pub api_token: Option<String>,
    /// How epics submitted here are pushed to their project.
    pub git_auth: GitAuth,
}

impl WebState {
    pub fn new(
        config: Arc<crate::config::Config>,
        store: Store,
        webhook: Option<WebhookIn>,
        api_token: Option<String>,
        git_auth: GitAuth,
    ) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(1024);
        Self {
            webhook,
            store,
            config,
            metrics: Arc::default(),
            runtime_ready: Arc::default(),
            runtime_logs: Arc::default(),
            runtime_read_log: Arc::default(),
            events,
            api_token,
            git_auth,
        }
    }
}

/// Largest webhook body accepted (GitHub caps payloads at 25 MB; ours are far smaller).
pub const MAX_WEBHOOK_BODY: usize = 5 * 1024 * 1024;

pub fn router(state: WebState) -> Router {
    let guarded = Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    Router::new()
        .route(
            "/webhooks/github",
            axum::routing::post(github_webhook)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BODY)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/login", get(auth::login))
        .merge(guarded)
        .with_state(state)
}

/// Verifies the signature before anything else (an unauthenticated body is never stored),
/// stores the delivery whole, de-duplicated by delivery id, and answers at once: the leading
/// engine processes it from the database.
async fn github_webhook(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let (code, text, answer) = answer_webhook(&s, &headers, &body).await;
    // The event label only for verified deliveries: anyone can send any header.
    let event = if matches!(answer, "unauthorized" | "not_configured") {
        "unverified"
    } else {
        event.as_str()
    };
    s.metrics.webhook_delivery(event, answer);
    (code, text)
}

async fn answer_webhook(
    s: &WebState,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (StatusCode, String, &'static str) {
    let Some(hook) = &s.webhook else {
        return (
            StatusCode::NOT_FOUND,
            "GitHub webhooks are not configured\n".to_string(),
            "not_configured",
        );
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if !crate::forge::webhook::verify_signature(
        &hook.secret,
        body,
        header("x-hub-signature-256").as_deref(),
    ) {
        tracing::warn!("rejected a webhook delivery with a missing or wrong signature");
        return (
            StatusCode::UNAUTHORIZED,
            "bad signature\n".to_string(),
            "unauthorized",
        );
    }
    let (Some(id), Some(event)) = (header("x-github-delivery"), header("x-github-event")) else {
        return (
            StatusCode::BAD_REQUEST,
            "X-GitHub-Delivery and X-GitHub-Event are required\n".to_string(),
            "bad_request",
        );
    };
    match s
        .store
        .store_delivery(&id, &event, body, chrono::Utc::now())
        .await
    {
        Ok(Stored::New) => (StatusCode::ACCEPTED, "accepted\n".to_string(), "accepted"),
        // A redelivery of one that waits: it is processed once, from the stored copy.
        Ok(Stored::Waiting) => (
            StatusCode::ACCEPTED,
            "accepted, already waiting to be processed\n".to_string(),
            "waiting",
        ),
        Ok(Stored::Processed) => (
            StatusCode::OK,
            "duplicate delivery, already processed\n".to_string(),
            "duplicate",
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}\n"),
            "unavailable",
        ),
    }
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
    // The gauges that mirror the store are read when scraped.
    if let Ok(c) = s.store.counts().await {
        s.metrics.set_tasks(&c);
    }
    if let Ok(pauses) = s.store.agent_pauses(chrono::Utc::now()).await {
        let agents: Vec<String> = pauses.into_iter().map(|(a, _, _)| a).collect();
        s.metrics.set_paused(&agents);
    }
    if let Ok(depth) = s.store.outbox_depth().await {
        s.metrics.outbox_depth.set(depth);
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
