//! A Kubernetes API server at the HTTP level, for the real kube client: Jobs (create, get, list,
//! watch, delete), Pods (list, log) and /version, answering with the JSON shapes of the API
//! reference (Job, JobList, Pod, PodList, Status, watch events). Tests script the cluster by
//! finishing Jobs the way the Job controller and kubelet would report them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

pub const NS: &str = "coding-swarm";

#[derive(Default)]
struct Cluster {
    jobs: BTreeMap<String, Value>,
    pods: BTreeMap<String, Vec<Value>>,
    logs: BTreeMap<String, String>,
    rv: u64,
    /// Every watch event with its resource version: a watch from version N gets the events
    /// after N first, as the API server's watch cache gives them.
    history: Vec<(u64, Value)>,
    /// Status codes the next Job creations answer with, in order.
    create_errors: VecDeque<u16>,
    /// (method, path and query, body, when)
    requests: Vec<(String, String, Value, Instant)>,
}

#[derive(Clone)]
pub struct FakeApi {
    cluster: Arc<Mutex<Cluster>>,
    events: broadcast::Sender<Value>,
}

pub struct ApiServer {
    pub url: String,
    pub api: FakeApi,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

const TIME: &str = "2026-11-26T09:00:00Z";

impl ApiServer {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(256);
        let api = FakeApi {
            cluster: Arc::default(),
            events,
        };
        let app = Router::new().fallback(handle).with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, api, task }
    }
}

impl FakeApi {
    fn bump(c: &mut Cluster) -> String {
        c.rv += 1;
        c.rv.to_string()
    }

    /// Records a watch event (under the cluster lock, so versions stay in order) and sends it.
    fn emit(&self, c: &mut Cluster, event: Value) {
        c.history.push((c.rv, event.clone()));
        let _ = self.events.send(event);
    }

    /// A Job that exists before the engine starts (an earlier engine created it).
    pub fn insert_job(&self, job: Value) {
        let mut c = self.cluster.lock().unwrap();
        let rv = Self::bump(&mut c);
        let mut job = job;
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        job["metadata"]["resourceVersion"] = json!(rv);
        job["metadata"]["uid"] = json!(format!("uid-{name}"));
        c.jobs.insert(name, job);
    }

    pub fn job(&self, name: &str) -> Option<Value> {
        self.cluster.lock().unwrap().jobs.get(name).cloned()
    }

    pub fn fail_next_creates(&self, codes: &[u16]) {
        self.cluster.lock().unwrap().create_errors.extend(codes);
    }

    pub fn requests(&self) -> Vec<(String, String, Value, Instant)> {
        self.cluster.lock().unwrap().requests.clone()
    }

    pub fn set_log(&self, pod: &str, text: &str) {
        self.cluster
            .lock()
            .unwrap()
            .logs
            .insert(pod.into(), text.into());
    }

    /// Reports the Job as the Job controller would, with its pod as the kubelet would.
    pub fn finish(&self, name: &str, job_status: Value, pod_status: Value) {
        let mut c = self.cluster.lock().unwrap();
        let rv = Self::bump(&mut c);
        let Some(job) = c.jobs.get_mut(name) else {
            panic!("no job {name}")
        };
        job["status"] = job_status;
        job["metadata"]["resourceVersion"] = json!(rv);
        let job = job.clone();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("{name}-x7k2p"), "namespace": NS, "uid": format!("pod-uid-{name}"), "resourceVersion": rv,
                "labels": {"job-name": name, "batch.kubernetes.io/job-name": name, "controller-uid": format!("uid-{name}")}},
            "spec": {"containers": [{"name": "worker", "image": "coding-swarm-worker:test"}], "restartPolicy": "Never"},
            "status": pod_status,
        });
        c.pods.insert(name.into(), vec![pod]);
        self.emit(&mut c, json!({"type": "MODIFIED", "object": job}));
    }

    /// Removes a Job without a watch event, as when a watch was relisting at that moment.
    pub fn vanish(&self, name: &str) {
        self.cluster.lock().unwrap().jobs.remove(name);
    }

    /// Deletes the Job as a person with kubectl would.
    pub fn delete_job(&self, name: &str) {
        let mut c = self.cluster.lock().unwrap();
        if let Some(mut job) = c.jobs.remove(name) {
            job["metadata"]["resourceVersion"] = json!(Self::bump(&mut c));
            self.emit(&mut c, json!({"type": "DELETED", "object": job}));
        }
    }
}

/// The status of a Job that ran to completion.
pub fn complete() -> Value {
    json!({"startTime": TIME, "completionTime": TIME, "succeeded": 1, "active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": TIME, "lastTransitionTime": TIME, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
            {"type": "Complete", "status": "True", "lastProbeTime": TIME, "lastTransitionTime": TIME, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"}]})
}

/// The status of a failed Job, with the controller's reason.
pub fn failed(reason: &str, message: &str) -> Value {
    json!({"startTime": TIME, "failed": 1, "active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
        "conditions": [
            {"type": "FailureTarget", "status": "True", "lastProbeTime": TIME, "lastTransitionTime": TIME, "reason": reason, "message": message},
            {"type": "Failed", "status": "True", "lastProbeTime": TIME, "lastTransitionTime": TIME, "reason": reason, "message": message}]})
}

/// A pod whose worker container ended: exit code, reason, termination message.
pub fn pod_terminated(exit_code: i32, reason: &str, message: Option<&str>) -> Value {
    let mut terminated = json!({"exitCode": exit_code, "reason": reason, "startedAt": TIME, "finishedAt": TIME, "containerID": "containerd://abc"});
    if let Some(m) = message {
        terminated["message"] = json!(m);
    }
    json!({"phase": if exit_code == 0 { "Succeeded" } else { "Failed" }, "startTime": TIME,
        "containerStatuses": [{"name": "worker", "ready": false, "restartCount": 0, "started": false, "image": "coding-swarm-worker:test",
            "imageID": "sha256:0123", "containerID": "containerd://abc", "state": {"terminated": terminated}, "lastState": {}}]})
}

async fn handle(State(api): State<FakeApi>, method: Method, uri: Uri, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    api.cluster.lock().unwrap().requests.push((
        method.to_string(),
        format!("{path}?{query}"),
        body.clone(),
        Instant::now(),
    ));
    let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    let pods = format!("/api/v1/namespaces/{NS}/pods");
    if path == "/version" {
        return axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "abc", "gitTreeState": "clean",
            "buildDate": TIME, "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"})).into_response();
    }
    if path == jobs && method == Method::POST {
        let mut c = api.cluster.lock().unwrap();
        if let Some(code) = c.create_errors.pop_front() {
            return match code {
                403 => status(403, "Forbidden", "jobs.batch is forbidden: User \"system:serviceaccount:coding-swarm:coding-swarm-engine\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"coding-swarm\""),
                429 => status(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later"),
                _ => status(code, "InternalError", "an error on the server (\"etcdserver: request timed out\") has prevented the request from succeeding"),
            };
        }
        let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        if c.jobs.contains_key(&name) {
            return status(
                409,
                "AlreadyExists",
                &format!("jobs.batch \"{name}\" already exists"),
            );
        }
        let rv = FakeApi::bump(&mut c);
        let mut job = body.clone();
        job["metadata"]["uid"] = json!(format!("uid-{name}"));
        job["metadata"]["resourceVersion"] = json!(rv);
        job["metadata"]["creationTimestamp"] = json!(TIME);
        job["status"] = json!({"active": 1, "startTime": TIME, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}});
        c.jobs.insert(name, job.clone());
        drop(c);
        let _ = api
            .events
            .send(json!({"type": "ADDED", "object": job.clone()}));
        return (StatusCode::CREATED, axum::Json(job)).into_response();
    }
    if path == jobs && method == Method::GET {
        if query.contains("watch=true") || query.contains("watch=1") {
            let from: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("resourceVersion="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Subscribe, then replay what happened since `from`; live events already replayed
            // are skipped by their version.
            let (rx, replay, last) = {
                let c = api.cluster.lock().unwrap();
                let rx = api.events.subscribe();
                let replay: Vec<Value> = c
                    .history
                    .iter()
                    .filter(|(rv, _)| *rv > from)
                    .map(|(_, e)| e.clone())
                    .collect();
                (rx, replay, c.rv)
            };
            let replayed = futures::stream::iter(
                replay
                    .into_iter()
                    .map(|ev| Ok::<_, std::io::Error>(Bytes::from(format!("{ev}\n")))),
            );
            let live = futures::stream::unfold(rx, move |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) => {
                            let rv: u64 = ev["object"]["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(u64::MAX);
                            if rv <= last {
                                continue;
                            }
                            return Some((
                                Ok::<_, std::io::Error>(Bytes::from(format!("{ev}\n"))),
                                rx,
                            ));
                        }
                        Err(_) => return None,
                    }
                }
            });
            let stream = futures::StreamExt::chain(replayed, live);
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap();
        }
        let c = api.cluster.lock().unwrap();
        let items: Vec<Value> = c.jobs.values().cloned().collect();
        return axum::Json(json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": c.rv.to_string()}, "items": items})).into_response();
    }
    if let Some(name) = path.strip_prefix(&format!("{jobs}/")) {
        let mut c = api.cluster.lock().unwrap();
        return match method {
            Method::GET => match c.jobs.get(name) {
                Some(j) => axum::Json(j.clone()).into_response(),
                None => status(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
            },
            Method::DELETE => match c.jobs.remove(name) {
                Some(j) => {
                    drop(c);
                    let _ = api
                        .events
                        .send(json!({"type": "DELETED", "object": j.clone()}));
                    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": "batch", "kind": "jobs", "uid": format!("uid-{name}")}})).into_response()
                }
                None => status(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
            },
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        };
    }
    if path == pods && method == Method::GET {
        let c = api.cluster.lock().unwrap();
        let job = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("labelSelector="))
            .map(|s| s.replace("%3D", "=").replace("job-name=", ""))
            .unwrap_or_default();
        let items = c.pods.get(&job).cloned().unwrap_or_default();
        return axum::Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": c.rv.to_string()}, "items": items})).into_response();
    }
    if let Some(rest) = path.strip_prefix(&format!("{pods}/")) {
        if let Some(pod) = rest.strip_suffix("/log") {
            let c = api.cluster.lock().unwrap();
            return match c.logs.get(pod) {
                Some(text) => ([("content-type", "text/plain")], text.clone()).into_response(),
                None => status(404, "NotFound", &format!("pods \"{pod}\" not found")),
            };
        }
    }
    status(
        404,
        "NotFound",
        &format!("the server could not find the requested resource ({method} {path})"),
    )
}
