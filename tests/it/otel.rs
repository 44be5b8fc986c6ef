//! The `otel` feature (this module is built only with it): `swarm up --once` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` exports its spans over OTLP/HTTP with protobuf to a small
//! receiver here, decoded with the OTLP protocol's own types: the sync pass carries its
//! project, the launch and the run's end their task, under the configured service name.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// "OTLP/HTTP": a POST of a protobuf `ExportTraceServiceRequest` to `/v1/traces`, answered 200
/// with a protobuf `ExportTraceServiceResponse`
/// (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>).
async fn traces(
    State(received): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            received.lock().unwrap().push(request);
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_a_run_reach_an_otlp_receiver() {
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let data = tempfile::tempdir().unwrap();
    let repo = crate::support::TestRepo::new();
    repo.commit(
        &[(".ai/tasks/traced.yaml", Some("addressee: w\nprompt: p\n"))],
        "a task",
    );
    let db = crate::support::TestDb::sqlite().await;
    let cfg = crate::support::write_config(data.path(), &db.url, &repo, "echo done", "");
    let out = tokio::task::spawn_blocking(move || {
        crate::support::command(env!("CARGO_BIN_EXE_swarm"))
            .args(["up", "--once", "--config"])
            .arg(&cfg)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_SERVICE_NAME", "swarm-under-test")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    server.abort();

    // The exporter flushed before the process ended: everything is here.
    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "no export: {stderr}");
    let mut spans = Vec::new();
    for request in received.iter() {
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().expect("a resource");
            assert_eq!(
                text(&resource.attributes, "service.name"),
                Some("swarm-under-test")
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let has = |name: &str, key: &str, value: &str| {
        spans
            .iter()
            .any(|s| s.name == name && text(&s.attributes, key) == Some(value))
    };
    assert!(has("sync", "project", "proj"), "{names:?}");
    assert!(has("launch", "task", "traced"), "{names:?}");
    assert!(has("run_end", "task", "traced"), "{names:?}");
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id.len() == 16 && s.span_id.len() == 8),
        "spans carry their ids"
    );
    db.drop_db().await;
}
