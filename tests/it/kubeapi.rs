//! A Kubernetes API server at the HTTP level, for the real kube client: Jobs (create, get, list,
//! watch, delete), Pods (list, watch, log), ConfigMaps (create, get; collected with the Job
//! that owns them), /version, and what `swarm doctor` asks (the namespace, a Secret,
//! SelfSubjectAccessReviews: [`access`]), answering with the JSON shapes of the API
//! reference and, on what the engine relies on, with the API server's semantics: every write has
//! the next resourceVersion and is in the watch history; watches start from a resourceVersion,
//! send BOOKMARKs, answer 410 Gone for a compacted one and end after their timeout; lists and
//! watches honour label selectors; create refuses what validation refuses (409, 422). Tests
//! script the cluster by finishing Jobs the way the Job controller and kubelet report them, and
//! by compacting the history, ending watches, or holding lists to order events.
//!
//! The semantics cited below are from "Kubernetes API Concepts",
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/> ("Efficient detection of
//! changes", "Watch bookmarks", "Semantics for watch"); the Status of refusals and their codes
//! (404 NotFound, 409 AlreadyExists, 410 Expired, 422 Invalid) from the API conventions,
//! <https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#http-status-codes>.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;

mod access;
mod rules;

use rules::{parse_selector, selects, validate_config_map, validate_job, Problem, Requirement};

pub const NS: &str = "coding-swarm";

const TIME: &str = "2026-11-26T09:00:00Z";

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path and the query.
    pub path: String,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// Which of the two resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Jobs,
    Pods,
    ConfigMaps,
    Secrets,
}

impl Resource {
    fn kind(self) -> (&'static str, &'static str) {
        match self {
            Self::Jobs => ("batch/v1", "Job"),
            Self::Pods => ("v1", "Pod"),
            Self::ConfigMaps => ("v1", "ConfigMap"),
            Self::Secrets => ("v1", "Secret"),
        }
    }

    /// The plural with its group, as in error messages (`jobs.batch "x" not found`).
    fn qualified(self) -> &'static str {
        match self {
            Self::Jobs => "jobs.batch",
            Self::Pods => "pods",
            Self::ConfigMaps => "configmaps",
            Self::Secrets => "secrets",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Self::Jobs => "batch",
            Self::Pods | Self::ConfigMaps | Self::Secrets => "",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Pods => "pods",
            Self::ConfigMaps => "configmaps",
            Self::Secrets => "secrets",
        }
    }
}

#[derive(Default)]
struct Cluster {
    jobs: BTreeMap<String, Value>,
    /// Pods by name.
    pods: BTreeMap<String, Value>,
    /// ConfigMaps by name.
    config_maps: BTreeMap<String, Value>,
    /// Secrets by name, as stored: `stringData` merged into base64 `data`.
    secrets: BTreeMap<String, Value>,
    logs: BTreeMap<String, String>,
    /// Containers (`pod/container`) that have ended: a followed log of one ends.
    logs_ended: HashSet<String>,
    /// The resourceVersion of the last write. One counter for every resource, like etcd's
    /// revision.
    rv: u64,
    /// Every write as its watch event, in resourceVersion order.
    history: Vec<(u64, Resource, Value)>,
    /// Versions up to this one are compacted away: a watch from an older one gets 410 Gone.
    compacted: u64,
    /// Status codes the next Job creations answer with, in order.
    create_errors: VecDeque<u16>,
    /// Refusals (403 Forbidden) the next ConfigMap creations answer with, in order.
    config_map_errors: VecDeque<u16>,
    requests: Vec<Seen>,
    /// Requests, and the answers to lists, in the order they happened.
    journal: Vec<String>,
    /// The server's own limit on a watch's length, besides the client's `timeoutSeconds`.
    watch_limit: Option<Duration>,
    /// How long pods take to terminate after a foreground deletion of their Job.
    pod_linger: Duration,
    /// What access reviews answer "not allowed" to.
    denied: Vec<access::Access>,
    /// The access reviews asked.
    reviews: Vec<Value>,
}

/// What open watches wake up for.
#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    rv: u64,
    bookmarks: u64,
    closes: u64,
}

#[derive(Clone)]
pub struct FakeApi {
    cluster: Arc<Mutex<Cluster>>,
    signal: Arc<watch::Sender<Signal>>,
    /// False while the test holds the answers to Job lists.
    lists_open: Arc<watch::Sender<bool>>,
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

/// A `Status` the way the API server writes a failure: kind, apiVersion, status, message,
/// reason, details and code.
fn status(code: u16, reason: &str, message: &str, details: Value) -> Response {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    if !details.is_null() {
        body["details"] = details;
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

/// "422 Invalid": what validation refused, each problem as a cause.
fn invalid(kind: &str, group: &str, name: &str, problems: &[Problem]) -> Response {
    let text: Vec<String> = problems
        .iter()
        .map(|(f, _, m)| format!("{f}: {m}"))
        .collect();
    let causes: Vec<Value> = problems
        .iter()
        .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
        .collect();
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut details = json!({"name": name, "kind": kind, "causes": causes});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    status(
        422,
        "Invalid",
        &format!("{qualified} \"{name}\" is invalid: {}", text.join(", ")),
        details,
    )
}

fn not_found(resource: Resource, name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", resource.qualified()),
        json!({"name": name, "group": resource.group(), "kind": resource.plural()}),
    )
}

/// "410 Gone": the Status of an expired resourceVersion, as a list answers it and as the ERROR
/// event a watch ends with ("Efficient detection of changes": clients "must handle the case by
/// recognizing the status code 410 Gone, clearing their local cache, performing a new get or
/// list operation, and starting the watch from the resourceVersion that was returned").
fn expired(asked: u64, oldest: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({oldest})"), "reason": "Expired", "code": 410})
}

impl ApiServer {
    pub async fn start() -> Self {
        let api = FakeApi {
            cluster: Arc::default(),
            signal: Arc::new(watch::channel(Signal::default()).0),
            lists_open: Arc::new(watch::channel(true).0),
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
    /// Records a write: the object gets the next resourceVersion, its watch event joins the
    /// history and open watches wake up. Every write goes through here, the engine's own
    /// creates and deletes included ("Efficient detection of changes": a watch from a
    /// resourceVersion receives every change after it).
    fn record(&self, c: &mut Cluster, resource: Resource, kind: &str, object: &mut Value) {
        c.rv += 1;
        object["metadata"]["resourceVersion"] = json!(c.rv.to_string());
        c.history.push((
            c.rv,
            resource,
            json!({"type": kind, "object": object.clone()}),
        ));
        let rv = c.rv;
        self.signal.send_modify(|s| s.rv = rv);
    }

    /// Stores a new Job with what the API server fills in (uid, resourceVersion, defaults, the
    /// selector and the pod template's labels), or says why it refuses it.
    fn create_job(&self, c: &mut Cluster, body: &Value) -> Result<Value, Box<Response>> {
        if body["kind"] != "Job" || body["apiVersion"] != "batch/v1" {
            return Err(Box::new(status(
                400,
                "BadRequest",
                "the API version in the data (v1) does not match the expected API version (batch/v1)",
                Value::Null,
            )));
        }
        if body["metadata"]["namespace"]
            .as_str()
            .is_some_and(|ns| ns != NS)
        {
            return Err(Box::new(status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
                Value::Null,
            )));
        }
        let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        let problems = validate_job(body);
        if !problems.is_empty() {
            return Err(Box::new(invalid("Job", "batch", &name, &problems)));
        }
        if c.jobs.contains_key(&name) {
            return Err(Box::new(status(
                409,
                "AlreadyExists",
                &format!("jobs.batch \"{name}\" already exists"),
                json!({"name": name, "group": "batch", "kind": "jobs"}),
            )));
        }
        let uid = format!("uid-{name}");
        let mut job = body.clone();
        let meta = &mut job["metadata"];
        meta["namespace"] = json!(NS);
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(TIME);
        meta["generation"] = json!(1);
        let spec = &mut job["spec"];
        for (field, default) in [
            ("completions", json!(1)),
            ("parallelism", json!(1)),
            ("completionMode", json!("NonIndexed")),
            ("suspend", json!(false)),
            ("podReplacementPolicy", json!("TerminatingOrFailed")),
        ] {
            if spec[field].is_null() {
                spec[field] = default;
            }
        }
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = &mut spec["template"]["metadata"]["labels"];
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels[k] = json!(v);
        }
        // A create cannot set status: the Job controller fills it in.
        if job["status"].is_null() {
            job["status"] = json!({});
        }
        self.record(c, Resource::Jobs, "ADDED", &mut job);
        c.jobs.insert(name, job.clone());
        Ok(job)
    }

    /// Removes a Job, with its pods and ConfigMaps when the propagation policy lets the garbage
    /// collector take them (`Background`, `Foreground`; without a policy a Job's pods are
    /// orphaned: <https://kubernetes.io/docs/concepts/architecture/garbage-collection/>). Pods
    /// take [`set_pod_linger`](Self::set_pod_linger) to terminate, as a kubelet stopping
    /// containers does, with a `deletionTimestamp` meanwhile. `Background`: the Job goes at
    /// once, its pods after they terminated. `Foreground` with pods: the Job stays, with a
    /// `deletionTimestamp` and the `foregroundDeletion` finalizer, until its pods are gone; the
    /// answer is the Job as it is then ("Foreground cascading deletion").
    fn remove_job(&self, c: &mut Cluster, name: &str, propagation: Option<&str>) -> Option<Value> {
        let cascade = matches!(propagation, Some("Background" | "Foreground"));
        let has_pods = Self::pods_of(c, name).next().is_some();
        if propagation == Some("Foreground") && has_pods {
            let mut job = c.jobs.get(name)?.clone();
            if job["metadata"]["deletionTimestamp"].is_null() {
                job["metadata"]["deletionTimestamp"] = json!(TIME);
                job["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
                self.record(c, Resource::Jobs, "MODIFIED", &mut job);
                c.jobs.insert(name.into(), job.clone());
                self.terminate_pods(c, name, true);
            }
            return Some(job);
        }
        let mut job = c.jobs.remove(name)?;
        self.record(c, Resource::Jobs, "DELETED", &mut job);
        if cascade {
            self.terminate_pods(c, name, false);
            // The garbage collector takes every dependent, whatever its kind.
            let uid = job["metadata"]["uid"].clone();
            for resource in [Resource::ConfigMaps, Resource::Secrets] {
                let store = match resource {
                    Resource::Secrets => &mut c.secrets,
                    _ => &mut c.config_maps,
                };
                let owned: Vec<String> = store
                    .iter()
                    .filter(|(_, m)| {
                        m["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                let mut gone: Vec<Value> = owned.iter().filter_map(|n| store.remove(n)).collect();
                for object in &mut gone {
                    self.record(c, resource, "DELETED", object);
                }
            }
        }
        Some(job)
    }

    fn pods_of<'a>(c: &'a Cluster, job: &'a str) -> impl Iterator<Item = String> + 'a {
        c.pods
            .iter()
            .filter(move |(_, p)| p["metadata"]["labels"]["job-name"] == job)
            .map(|(n, _)| n.clone())
    }

    /// Deletes the pods of Job `job`: at once without a linger; else they get a
    /// `deletionTimestamp` and go when it has passed, and then, with `then_job`, the Job.
    fn terminate_pods(&self, c: &mut Cluster, job: &str, then_job: bool) {
        let pods: Vec<String> = Self::pods_of(c, job).collect();
        let linger = c.pod_linger;
        if linger.is_zero() && !then_job {
            for p in pods {
                if let Some(mut pod) = c.pods.remove(&p) {
                    self.record(c, Resource::Pods, "DELETED", &mut pod);
                }
            }
            return;
        }
        for p in &pods {
            let mut pod = c.pods[p].clone();
            pod["metadata"]["deletionTimestamp"] = json!(TIME);
            self.record(c, Resource::Pods, "MODIFIED", &mut pod);
            c.pods.insert(p.clone(), pod);
        }
        let (api, job) = (self.clone(), job.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            let mut c = api.cluster.lock().unwrap();
            for p in pods {
                if let Some(mut pod) = c.pods.remove(&p) {
                    api.record(&mut c, Resource::Pods, "DELETED", &mut pod);
                }
            }
            if then_job {
                // The finalizer is done: the Job goes, and its other dependents with it.
                api.remove_job(&mut c, &job, Some("Background"));
            }
        });
    }

    /// A Job that exists before the engine starts (an earlier engine created it), with the
    /// status it has reached if `job` carries one.
    pub fn insert_job(&self, job: Value) {
        let mut c = self.cluster.lock().unwrap();
        if let Err(r) = self.create_job(&mut c, &job) {
            panic!("the API server refuses this Job: {r:?}");
        }
    }

    /// How long the pods of a deleted Job take to terminate (default: no time).
    pub fn set_pod_linger(&self, linger: Duration) {
        self.cluster.lock().unwrap().pod_linger = linger;
    }

    pub fn config_map(&self, name: &str) -> Option<Value> {
        self.cluster.lock().unwrap().config_maps.get(name).cloned()
    }

    /// Stores a new ConfigMap, or says why it refuses it.
    fn create_config_map(&self, c: &mut Cluster, body: &Value) -> Result<Value, Box<Response>> {
        let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        let problems = validate_config_map(body);
        if !problems.is_empty() {
            return Err(Box::new(invalid("ConfigMap", "", &name, &problems)));
        }
        if c.config_maps.contains_key(&name) {
            return Err(Box::new(status(
                409,
                "AlreadyExists",
                &format!("configmaps \"{name}\" already exists"),
                json!({"name": name, "kind": "configmaps"}),
            )));
        }
        let mut map = body.clone();
        map["metadata"]["namespace"] = json!(NS);
        map["metadata"]["uid"] = json!(format!("uid-cm-{name}"));
        map["metadata"]["creationTimestamp"] = json!(TIME);
        self.record(c, Resource::ConfigMaps, "ADDED", &mut map);
        c.config_maps.insert(name, map.clone());
        Ok(map)
    }

    pub fn secret(&self, name: &str) -> Option<Value> {
        self.cluster.lock().unwrap().secrets.get(name).cloned()
    }

    /// Stores a new Secret as the API server does: `stringData` is write-only, merged into
    /// `data` base64-encoded (https://kubernetes.io/docs/reference/kubernetes-api/config-and-storage-resources/secret-v1/).
    fn create_secret(&self, c: &mut Cluster, body: &Value) -> Result<Value, Box<Response>> {
        use base64::Engine as _;
        let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut problems = validate_config_map(body);
        for (k, v) in body["stringData"].as_object().into_iter().flatten() {
            if !v.is_string() {
                problems.push((
                    format!("stringData[{k}]"),
                    "FieldValueInvalid",
                    "Invalid value: must be a string".into(),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Box::new(invalid("Secret", "", &name, &problems)));
        }
        if c.secrets.contains_key(&name) {
            return Err(Box::new(status(
                409,
                "AlreadyExists",
                &format!("secrets \"{name}\" already exists"),
                json!({"name": name, "kind": "secrets"}),
            )));
        }
        let mut secret = body.clone();
        let mut data = secret["data"].as_object().cloned().unwrap_or_default();
        for (k, v) in body["stringData"].as_object().into_iter().flatten() {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
            data.insert(k.clone(), json!(encoded));
        }
        if let Some(o) = secret.as_object_mut() {
            o.remove("stringData");
        }
        secret["data"] = Value::Object(data);
        secret["metadata"]["namespace"] = json!(NS);
        secret["metadata"]["uid"] = json!(format!("uid-secret-{name}"));
        secret["metadata"]["creationTimestamp"] = json!(TIME);
        self.record(c, Resource::Secrets, "ADDED", &mut secret);
        c.secrets.insert(name, secret.clone());
        Ok(secret)
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.cluster.lock().unwrap().pods.get(name).cloned()
    }

    /// The Job's pod starts running, as the kubelet reports it.
    pub fn start_pod(&self, name: &str) {
        let mut c = self.cluster.lock().unwrap();
        let mut pod = Self::pod_of(&c, name, json!({"phase": "Running", "startTime": TIME}));
        self.record(&mut c, Resource::Pods, "ADDED", &mut pod);
        c.pods.insert(format!("{name}-x7k2p"), pod);
    }

    /// The kubelet reports the status of the Job's pod (made now if there is none yet); the Job
    /// itself does not change, as a Job whose pod cannot start stays active.
    pub fn report_pod(&self, name: &str, pod_status: Value) {
        let mut c = self.cluster.lock().unwrap();
        let pod_name = format!("{name}-x7k2p");
        let kind = if c.pods.contains_key(&pod_name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let mut pod = Self::pod_of(&c, name, pod_status);
        self.record(&mut c, Resource::Pods, kind, &mut pod);
        c.pods.insert(pod_name, pod);
    }

    /// Forgets the refusals queued for the next Job creations.
    pub fn clear_create_errors(&self) {
        self.cluster.lock().unwrap().create_errors.clear();
    }

    /// The names of the Jobs that exist.
    pub fn job_names(&self) -> Vec<String> {
        self.cluster.lock().unwrap().jobs.keys().cloned().collect()
    }

    pub fn job(&self, name: &str) -> Option<Value> {
        self.cluster.lock().unwrap().jobs.get(name).cloned()
    }

    pub fn fail_next_config_map_creates(&self, codes: &[u16]) {
        self.cluster.lock().unwrap().config_map_errors.extend(codes);
    }

    pub fn fail_next_creates(&self, codes: &[u16]) {
        self.cluster.lock().unwrap().create_errors.extend(codes);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.cluster.lock().unwrap().requests.clone()
    }

    /// Requests (`METHOD path?query`) and the answers to lists (`answered LIST path: names`),
    /// in the order they happened.
    pub fn journal(&self) -> Vec<String> {
        self.cluster.lock().unwrap().journal.clone()
    }

    /// The resourceVersion of the last write.
    pub fn resource_version(&self) -> u64 {
        self.cluster.lock().unwrap().rv
    }

    /// The log of the pod's last container (the push, which writes the run's end).
    pub fn set_log(&self, pod: &str, text: &str) {
        self.set_container_log(pod, "worker", text);
    }

    pub fn set_container_log(&self, pod: &str, container: &str, text: &str) {
        self.cluster
            .lock()
            .unwrap()
            .logs
            .insert(format!("{pod}/{container}"), text.into());
    }

    /// The container has ended: a followed log of it ends, as the kubelet ends it.
    pub fn end_container_log(&self, pod: &str, container: &str) {
        self.cluster
            .lock()
            .unwrap()
            .logs_ended
            .insert(format!("{pod}/{container}"));
    }

    /// Appends to a container's log, as the container writes it.
    pub fn append_container_log(&self, pod: &str, container: &str, text: &str) {
        self.cluster
            .lock()
            .unwrap()
            .logs
            .entry(format!("{pod}/{container}"))
            .or_default()
            .push_str(text);
    }

    /// Reports the Job as the Job controller would, with its pod as the kubelet would.
    pub fn finish(&self, name: &str, job_status: Value, pod_status: Value) {
        let mut c = self.cluster.lock().unwrap();
        self.finish_locked(&mut c, name, job_status, pod_status);
    }

    /// [`finish`](Self::finish) while the watches are down, with the history compacted past
    /// it, like [`vanish`](Self::vanish): no watch sees the MODIFIED event; a watcher learns of
    /// the end only from its next list.
    pub fn finish_unseen(&self, name: &str, job_status: Value, pod_status: Value) {
        let mut c = self.cluster.lock().unwrap();
        self.finish_locked(&mut c, name, job_status, pod_status);
        Self::compact_locked(&mut c);
        self.signal.send_modify(|s| s.closes += 1);
    }

    fn finish_locked(&self, c: &mut Cluster, name: &str, job_status: Value, pod_status: Value) {
        let Some(mut job) = c.jobs.get(name).cloned() else {
            panic!("no job {name}")
        };
        let mut pod = Self::pod_of(c, name, pod_status);
        let pod_name = format!("{name}-x7k2p");
        let kind = if c.pods.contains_key(&pod_name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(c, Resource::Pods, kind, &mut pod);
        c.pods.insert(pod_name, pod);
        job["status"] = job_status;
        self.record(c, Resource::Jobs, "MODIFIED", &mut job);
        c.jobs.insert(name.into(), job);
    }

    /// The pod the Job controller makes for Job `name`, with `pod_status`.
    /// Its labels are the template's (which carry the Job controller's own).
    fn pod_of(c: &Cluster, name: &str, pod_status: Value) -> Value {
        let uid = c.jobs[name]["metadata"]["uid"].clone();
        // The pod's spec is the Job's template, as the Job controller makes it.
        let spec = match &c.jobs[name]["spec"]["template"]["spec"] {
            Value::Object(_) => c.jobs[name]["spec"]["template"]["spec"].clone(),
            _ => {
                json!({"containers": [{"name": "worker", "image": "coding-swarm-worker:test"}], "restartPolicy": "Never"})
            }
        };
        let labels = c.jobs[name]["spec"]["template"]["metadata"]["labels"].clone();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("{name}-x7k2p"), "namespace": NS, "uid": format!("pod-uid-{name}"), "creationTimestamp": TIME,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": spec,
            "status": pod_status,
        })
    }

    /// Deletes the Job as a person with kubectl would (which deletes in the background).
    pub fn delete_job(&self, name: &str) {
        let mut c = self.cluster.lock().unwrap();
        self.remove_job(&mut c, name, Some("Background"));
    }

    /// Deletes the Job while the watches are down and compacts the history past the deletion,
    /// so no watch sees the DELETED event: a watcher resuming from its last version gets 410
    /// Gone and lists again, and the Job is simply not in the list. This is how a real watch
    /// misses a deletion.
    pub fn vanish(&self, name: &str) {
        let mut c = self.cluster.lock().unwrap();
        self.remove_job(&mut c, name, Some("Background"));
        Self::compact_locked(&mut c);
        self.signal.send_modify(|s| s.closes += 1);
    }

    fn compact_locked(c: &mut Cluster) {
        c.compacted = c.rv;
        c.history.clear();
    }

    /// Compacts the history, as etcd does ("Clusters using etcd 3 preserve changes in the last
    /// 5 minutes by default"): a watch from a version before now gets 410 Gone.
    pub fn compact(&self) {
        let mut c = self.cluster.lock().unwrap();
        Self::compact_locked(&mut c);
        // Open watches that are behind fail at once; those that are current go on.
        let rv = c.rv;
        self.signal.send_modify(|s| s.rv = rv);
    }

    /// Sends a BOOKMARK with the current resourceVersion on every open watch that asked for
    /// them ("Watch bookmarks": the server sends them at its own discretion).
    pub fn bookmark(&self) {
        let _c = self.cluster.lock().unwrap();
        self.signal.send_modify(|s| s.bookmarks += 1);
    }

    /// Ends every open watch, as the API server does when a watch reaches its timeout.
    pub fn end_watches(&self) {
        let _c = self.cluster.lock().unwrap();
        self.signal.send_modify(|s| s.closes += 1);
    }

    /// Limits how long a watch stays open, whatever its `timeoutSeconds` asks.
    pub fn set_watch_limit(&self, limit: Duration) {
        self.cluster.lock().unwrap().watch_limit = Some(limit);
    }

    /// Holds the answers to Job lists until [`release_lists`](Self::release_lists).
    pub fn hold_lists(&self) {
        self.lists_open.send_replace(false);
    }

    pub fn release_lists(&self) {
        self.lists_open.send_replace(true);
    }

    /// The events a watch from `from` (exclusive) gets now; `Err` with the 410 Status when
    /// `from` is compacted away.
    fn events_after(
        c: &Cluster,
        resource: Resource,
        from: u64,
        selector: &[Requirement],
    ) -> Result<Vec<Value>, Value> {
        if from < c.compacted {
            return Err(expired(from, c.compacted));
        }
        Ok(c.history
            .iter()
            .filter(|(rv, r, ev)| *rv > from && *r == resource && selects(selector, &ev["object"]))
            .map(|(_, _, ev)| ev.clone())
            .collect())
    }
}

/// The state of one open watch.
struct Watching {
    api: FakeApi,
    resource: Resource,
    selector: Vec<Requirement>,
    bookmarks: bool,
    rx: watch::Receiver<Signal>,
    seen: Signal,
    /// The resourceVersion up to which events were sent.
    cursor: u64,
    deadline: tokio::time::Instant,
    pending: VecDeque<Value>,
    done: bool,
}

impl Watching {
    /// Queues what happened since the last look; false when nothing did.
    fn look(&mut self) -> bool {
        let signal = *self.rx.borrow_and_update();
        let mut c = self.api.cluster.lock().unwrap();
        match FakeApi::events_after(&c, self.resource, self.cursor, &self.selector) {
            Ok(events) => self.pending.extend(events),
            Err(gone) => {
                // Inside the stream, as the API server does: an ERROR event, then the end.
                let entry = format!("sent ERROR 410 to a watch from {}", self.cursor);
                c.journal.push(entry);
                self.pending
                    .push_back(json!({"type": "ERROR", "object": gone}));
                self.done = true;
            }
        }
        self.cursor = self.cursor.max(c.rv);
        if signal.bookmarks != self.seen.bookmarks && self.bookmarks && !self.done {
            // "Object returned in that event is of the type requested by the request, but only
            // resourceVersion field is set."
            let (api_version, kind) = self.resource.kind();
            let entry = format!("sent BOOKMARK {}", c.rv);
            c.journal.push(entry);
            self.pending.push_back(
                json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": c.rv.to_string(), "creationTimestamp": null}}}),
            );
        }
        if signal.closes != self.seen.closes && !self.done {
            c.journal.push("ended a watch".into());
            self.done = true;
        }
        self.seen = signal;
        !self.pending.is_empty() || self.done
    }

    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(Bytes::from(format!("{ev}\n"))), self));
            }
            if self.done {
                return None;
            }
            if self.look() {
                continue;
            }
            tokio::select! {
                changed = self.rx.changed() => if changed.is_err() { return None },
                // "timeoutSeconds": the server ends the watch; the client resumes it.
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.api.cluster.lock().unwrap().journal.push("a watch timed out".into());
                    self.done = true;
                }
            }
        }
    }
}

async fn handle(
    State(api): State<FakeApi>,
    method: Method,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let raw_query = uri.query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    {
        let mut c = api.cluster.lock().unwrap();
        c.requests.push(Seen {
            method: method.to_string(),
            path: format!("{path}?{raw_query}"),
            body: body.clone(),
            at: std::time::Instant::now(),
        });
        c.journal.push(format!("{method} {path}?{raw_query}"));
    }
    let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    let pods = format!("/api/v1/namespaces/{NS}/pods");
    if let Some(answer) = access::answer(&api, &method, &path, &headers, &body) {
        return answer;
    }
    if path == "/version" {
        return axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "abc", "gitTreeState": "clean",
            "buildDate": TIME, "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"})).into_response();
    }
    let collection = if path == jobs {
        Some(Resource::Jobs)
    } else if path == pods {
        Some(Resource::Pods)
    } else {
        None
    };
    let config_maps = format!("/api/v1/namespaces/{NS}/configmaps");
    if path == config_maps && method == Method::POST {
        let mut c = api.cluster.lock().unwrap();
        if let Some(code) = c.config_map_errors.pop_front() {
            return status(code, "Forbidden", "configmaps is forbidden: User \"system:serviceaccount:coding-swarm:coding-swarm-engine\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"coding-swarm\"", json!({"kind": "configmaps"}));
        }
        return match api.create_config_map(&mut c, &body) {
            Ok(map) => (StatusCode::CREATED, axum::Json(map)).into_response(),
            Err(refused) => *refused,
        };
    }
    if let Some(name) = path.strip_prefix(&format!("{config_maps}/")) {
        let c = api.cluster.lock().unwrap();
        return match (method, c.config_maps.get(name)) {
            (Method::GET, Some(m)) => axum::Json(m.clone()).into_response(),
            (Method::GET, None) => not_found(Resource::ConfigMaps, name),
            _ => status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            ),
        };
    }
    let secrets = format!("/api/v1/namespaces/{NS}/secrets");
    if path == secrets && method == Method::POST {
        let mut c = api.cluster.lock().unwrap();
        return match api.create_secret(&mut c, &body) {
            Ok(secret) => (StatusCode::CREATED, axum::Json(secret)).into_response(),
            Err(refused) => *refused,
        };
    }
    if let Some(name) = path.strip_prefix(&format!("{secrets}/")) {
        let mut c = api.cluster.lock().unwrap();
        return match (method, c.secrets.get(name).cloned()) {
            (Method::GET, Some(m)) => axum::Json(m).into_response(),
            (Method::GET | Method::PATCH, None) => not_found(Resource::Secrets, name),
            // A JSON merge patch (RFC 7386) of `stringData`, which the server stores in
            // `data` as on create.
            (Method::PATCH, Some(mut secret)) => {
                use base64::Engine as _;
                if body["stringData"].is_null() && body["data"].is_null() {
                    return status(422, "Invalid", "nothing to patch", Value::Null);
                }
                for (k, v) in body["stringData"].as_object().into_iter().flatten() {
                    let Some(v) = v.as_str() else {
                        return invalid(
                            "Secret",
                            "",
                            name,
                            &[(
                                format!("stringData[{k}]"),
                                "FieldValueInvalid",
                                "Invalid value: must be a string".into(),
                            )],
                        );
                    };
                    secret["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(v));
                }
                api.record(&mut c, Resource::Secrets, "MODIFIED", &mut secret);
                c.secrets.insert(name.to_string(), secret.clone());
                axum::Json(secret).into_response()
            }
            _ => status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            ),
        };
    }
    if path == jobs && method == Method::POST {
        let mut c = api.cluster.lock().unwrap();
        if let Some(code) = c.create_errors.pop_front() {
            return match code {
                403 => status(403, "Forbidden", "jobs.batch is forbidden: User \"system:serviceaccount:coding-swarm:coding-swarm-engine\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"coding-swarm\"", json!({"group": "batch", "kind": "jobs"})),
                // The API server sends the wait twice: in the Status and as `Retry-After`.
                429 => {
                    let mut r = status(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later", json!({"retryAfterSeconds": 1}));
                    r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
                    r
                }
                _ => status(code, "InternalError", "an error on the server (\"etcdserver: request timed out\") has prevented the request from succeeding", json!({"causes": [{"message": "etcdserver: request timed out"}]})),
            };
        }
        return match api.create_job(&mut c, &body) {
            Ok(job) => (StatusCode::CREATED, axum::Json(job)).into_response(),
            Err(refused) => *refused,
        };
    }
    if let (Some(resource), &Method::GET) = (collection, &method) {
        let selector = match parse_selector(&param("labelSelector").unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => return status(400, "BadRequest", &e, Value::Null),
        };
        if let Some(f) = param("fieldSelector").filter(|f| !f.is_empty()) {
            if !f.starts_with("metadata.name=") {
                return status(
                    400,
                    "BadRequest",
                    &format!("\"{f}\" is not a known field selector: only \"metadata.name\""),
                    Value::Null,
                );
            }
        }
        let name_field = param("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
        let selected = |o: &Value| {
            selects(&selector, o)
                && name_field
                    .as_deref()
                    .is_none_or(|n| o["metadata"]["name"] == n)
        };
        let version: Option<u64> = param("resourceVersion")
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().unwrap_or(0));
        if matches!(param("watch").as_deref(), Some("true" | "1")) {
            let rx = api.signal.subscribe();
            let mut c = api.cluster.lock().unwrap();
            // Signals are sent under the cluster lock: what this one says is covered below.
            let seen = *rx.borrow();
            let mut pending = VecDeque::new();
            let cursor = match version {
                // Unset or "0": "Get State and Start at Most Recent" / "Start at Any": synthetic
                // ADDED events for what exists, then the changes after it.
                None | Some(0) => {
                    let current: Vec<&Value> = match resource {
                        Resource::Jobs => c.jobs.values().collect(),
                        Resource::Pods => c.pods.values().collect(),
                        Resource::ConfigMaps => c.config_maps.values().collect(),
                        Resource::Secrets => c.secrets.values().collect(),
                    };
                    pending.extend(
                        current
                            .into_iter()
                            .filter(|o| selected(o))
                            .map(|o| json!({"type": "ADDED", "object": o})),
                    );
                    c.rv
                }
                Some(from) => from,
            };
            let limit = Duration::from_secs(
                param("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(1800),
            );
            let limit = c.watch_limit.map_or(limit, |l| l.min(limit));
            c.journal.push(format!("opened a watch from {cursor}"));
            drop(c);
            let mut state = Watching {
                api: api.clone(),
                resource,
                selector: selector.clone(),
                bookmarks: param("allowWatchBookmarks").as_deref() == Some("true"),
                rx,
                seen,
                cursor,
                deadline: tokio::time::Instant::now() + limit,
                pending,
                done: false,
            };
            // Events between the version asked for and now come first (or the 410).
            state.look();
            let stream = futures::stream::unfold(state, Watching::next);
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap();
        }
        if resource == Resource::Jobs {
            let mut open = api.lists_open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
        let mut c = api.cluster.lock().unwrap();
        // "resourceVersionMatch=Exact" asks for the state at that version: gone once compacted.
        if let (Some(v), Some("Exact")) = (version, param("resourceVersionMatch").as_deref()) {
            if v < c.compacted {
                let gone = expired(v, c.compacted);
                return (StatusCode::GONE, axum::Json(gone)).into_response();
            }
        }
        let items: Vec<Value> = match resource {
            Resource::Jobs => c.jobs.values().filter(|o| selected(o)).cloned().collect(),
            Resource::Pods => c.pods.values().filter(|o| selected(o)).cloned().collect(),
            Resource::ConfigMaps => c
                .config_maps
                .values()
                .filter(|o| selected(o))
                .cloned()
                .collect(),
            Resource::Secrets => c
                .secrets
                .values()
                .filter(|o| selected(o))
                .cloned()
                .collect(),
        };
        let names: Vec<&str> = items
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        let entry = format!("answered LIST {path}: {}", names.join(","));
        c.journal.push(entry);
        let (api_version, kind) = resource.kind();
        // The list's own resourceVersion is where a watch continues from. `limit` is not
        // honoured: the API server may return everything at once (no `continue`).
        return axum::Json(
            json!({"apiVersion": api_version, "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": c.rv.to_string()}, "items": items}),
        )
        .into_response();
    }
    if let Some(name) = path.strip_prefix(&format!("{jobs}/")) {
        let mut c = api.cluster.lock().unwrap();
        return match method {
            Method::GET => match c.jobs.get(name) {
                Some(j) => axum::Json(j.clone()).into_response(),
                None => not_found(Resource::Jobs, name),
            },
            Method::DELETE => {
                let policy = body["propagationPolicy"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| param("propagationPolicy"));
                match api.remove_job(&mut c, name, policy.as_deref()) {
                    // Still there, waiting for its pods: the answer is the object.
                    Some(j) if c.jobs.contains_key(name) => axum::Json(j).into_response(),
                    Some(j) => axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": "batch", "kind": "jobs", "uid": j["metadata"]["uid"]}}))
                    .into_response(),
                    None => not_found(Resource::Jobs, name),
                }
            }
            _ => status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            ),
        };
    }
    if let Some(rest) = path.strip_prefix(&format!("{pods}/")) {
        let c = api.cluster.lock().unwrap();
        let pod_name = rest.strip_suffix("/log").unwrap_or(rest);
        let Some(pod) = c.pods.get(pod_name) else {
            return not_found(Resource::Pods, pod_name);
        };
        if rest.ends_with("/log") {
            // Init containers' logs are read by name as well.
            let containers: Vec<&str> = pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(pod["spec"]["containers"].as_array().into_iter().flatten())
                .filter_map(|c| c["name"].as_str())
                .collect();
            match param("container") {
                Some(name) if containers.contains(&name.as_str()) => {}
                Some(name) => {
                    return status(
                        400,
                        "BadRequest",
                        &format!("container {name} is not valid for pod {pod_name}"),
                        Value::Null,
                    )
                }
                None if containers.len() == 1 => {}
                None => {
                    return status(400, "BadRequest", &format!("a container name must be specified for pod {pod_name}, choose one of: [{}]", containers.join(" ")), Value::Null)
                }
            }
            // Logs by pod and container; a container that has not run has none to give.
            let container = param("container").unwrap_or_else(|| containers[0].to_string());
            let Some(text) = c.logs.get(&format!("{pod_name}/{container}")).cloned() else {
                return status(
                    400,
                    "BadRequest",
                    &format!("container \"{container}\" in pod \"{pod_name}\" is waiting to start: PodInitializing"),
                    Value::Null,
                );
            };
            // "follow": the log so far, then what the container writes, until it ends
            // (or its pod is gone): one chunked answer that stays open meanwhile.
            if param("follow").as_deref() == Some("true") {
                let key = format!("{pod_name}/{container}");
                let pod_name = pod_name.to_string();
                let cluster = api.cluster.clone();
                drop(c);
                let chunks = futures::stream::unfold(0usize, move |sent| {
                    let (cluster, key, pod_name) = (cluster.clone(), key.clone(), pod_name.clone());
                    async move {
                        loop {
                            let (text, ended) = {
                                let c = cluster.lock().unwrap();
                                (
                                    c.logs.get(&key).cloned().unwrap_or_default(),
                                    c.logs_ended.contains(&key) || !c.pods.contains_key(&pod_name),
                                )
                            };
                            if text.len() > sent {
                                let chunk = Bytes::from(text[sent..].to_string());
                                return Some((
                                    Ok::<_, std::convert::Infallible>(chunk),
                                    text.len(),
                                ));
                            }
                            if ended {
                                return None;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                });
                return ([("content-type", "text/plain")], Body::from_stream(chunks))
                    .into_response();
            }
            let text = match param("tailLines").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => {
                    let lines: Vec<&str> = text.split_inclusive('\n').collect();
                    lines[lines.len().saturating_sub(n)..].concat()
                }
                None => text,
            };
            return ([("content-type", "text/plain")], text).into_response();
        }
        return axum::Json(pod.clone()).into_response();
    }
    status(
        404,
        "NotFound",
        &format!("the server could not find the requested resource ({method} {path})"),
        Value::Null,
    )
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
