//! The dashboard: a handful of server-sent shells whose data comes from the JSON API and stays
//! live through the event stream. All user text (prompts, summaries, logs) reaches the page
//! through `textContent`, never as HTML.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use super::WebState;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(|| async { page("overview", "Projects", "") }))
        .route("/board", get(|| async { page("board", "Task board", "") }))
        .route("/queues", get(|| async { page("queues", "Queues", "") }))
        .route("/stats", get(|| async { page("stats", "Stats", "") }))
        .route(
            "/errors",
            get(|| async { page("errors", "Bad task files", "") }),
        )
        .route("/tasks/{project}/{key}", get(task_page))
        .route(
            "/assets/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/assets/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(name: &str, title: &str, data: &str) -> impl IntoResponse {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · coding-swarm</title><link rel="stylesheet" href="/assets/app.css"></head>
<body data-page="{name}" {data}>
<header><a class="brand" href="/">coding-swarm</a>
<nav><a href="/">Projects</a><a href="/board">Board</a><a href="/queues">Queues</a><a href="/stats">Stats</a><a href="/errors">Bad files</a></nav>
<span id="live" class="live">connecting…</span></header>
<div id="pauses"></div>
<main id="main"><h1>{title}</h1><div id="content"></div></main>
<script src="/assets/app.js"></script></body></html>"#,
        title = esc(title),
    ))
}

async fn task_page(Path((project, key)): Path<(String, String)>) -> impl IntoResponse {
    let data = format!(
        r#"data-project="{}" data-key="{}""#,
        esc(&project),
        esc(&key)
    );
    page("task", &format!("{project}/{key}"), &data)
}
