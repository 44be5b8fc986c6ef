//! What `swarm doctor` asks the fake API server: the namespace and a Secret (whole, or as
//! `PartialObjectMetadata` when the `Accept` header asks for it, as kube's `get_metadata` does),
//! and `SelfSubjectAccessReview`s, answered by a rule table of denials.
//!
//! Wire formats: "Alternate representations of resources" in "Kubernetes API Concepts"
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#alternate-representations-of-resources>)
//! for `as=PartialObjectMetadata;g=meta.k8s.io;v=v1`; "Checking API access"
//! (<https://kubernetes.io/docs/reference/access-authn-authz/authorization/#checking-api-access>)
//! and the `SelfSubjectAccessReview` reference
//! (<https://kubernetes.io/docs/reference/kubernetes-api/authorization-resources/self-subject-access-review-v1/>):
//! a create-only resource; the answer is the review with `status.allowed` (and `reason`).

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{status, FakeApi, NS, TIME};

/// One SelfSubjectAccessReview's question: verb, API group, resource, subresource.
pub type Access = (String, String, String, String);

impl FakeApi {
    /// A Secret in the namespace, with these keys (values are made up).
    pub fn add_secret(&self, name: &str, keys: &[&str]) {
        let data: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), json!("c2VjcmV0LXZhbHVl")))
            .collect();
        self.cluster.lock().unwrap().secrets.insert(
            name.to_string(),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": NS, "uid": format!("uid-secret-{name}"), "resourceVersion": "7", "creationTimestamp": TIME},
                "data": data}),
        );
    }

    /// From now on, access reviews of `verb` on `resource` (`pods/log` for a subresource) in
    /// `group` answer "not allowed".
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        self.cluster.lock().unwrap().denied.push((
            verb.into(),
            group.into(),
            resource.into(),
            sub.into(),
        ));
    }

    /// The access reviews asked, in order.
    pub fn reviews(&self) -> Vec<Value> {
        self.cluster.lock().unwrap().reviews.clone()
    }
}

/// The object, or its `PartialObjectMetadata` when the client asked for that.
fn shaped(object: &Value, headers: &HeaderMap) -> Response {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("as=PartialObjectMetadata;g=meta.k8s.io;v=v1") {
        return axum::Json(json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]}))
            .into_response();
    }
    axum::Json(object.clone()).into_response()
}

/// Answers the requests this module serves; `None` for the others.
pub(super) fn answer(
    api: &FakeApi,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Option<Response> {
    let namespace = format!("/api/v1/namespaces/{NS}");
    if let Some(name) = path.strip_prefix("/api/v1/namespaces/") {
        if !name.contains('/') && *method == Method::GET {
            if path == namespace {
                let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": NS, "uid": "uid-ns", "resourceVersion": "1", "creationTimestamp": TIME,
                        "labels": {"kubernetes.io/metadata.name": NS}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                return Some(shaped(&ns, headers));
            }
            return Some(status(
                404,
                "NotFound",
                &format!("namespaces \"{name}\" not found"),
                json!({"name": name, "kind": "namespaces"}),
            ));
        }
    }
    if let Some(name) = path.strip_prefix(&format!("{namespace}/secrets/")) {
        if *method != Method::GET {
            return None;
        }
        let c = api.cluster.lock().unwrap();
        return Some(match c.secrets.get(name) {
            Some(s) => shaped(s, headers),
            None => status(
                404,
                "NotFound",
                &format!("secrets \"{name}\" not found"),
                json!({"name": name, "kind": "secrets"}),
            ),
        });
    }
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" {
        if *method != Method::POST {
            return Some(status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            ));
        }
        if body["kind"] != "SelfSubjectAccessReview"
            || body["apiVersion"] != "authorization.k8s.io/v1"
        {
            return Some(status(400, "BadRequest", "the API version in the data does not match the expected API version (authorization.k8s.io/v1)", Value::Null));
        }
        let attrs = &body["spec"]["resourceAttributes"];
        if !attrs.is_object() && !body["spec"]["nonResourceAttributes"].is_object() {
            return Some(status(422, "Invalid", "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                json!({"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview", "causes": [{"reason": "FieldValueInvalid", "field": "spec.resourceAttributes"}]})));
        }
        let field = |k: &str| attrs[k].as_str().unwrap_or("").to_string();
        let asked: Access = (
            field("verb"),
            field("group"),
            field("resource"),
            field("subresource"),
        );
        let mut c = api.cluster.lock().unwrap();
        c.reviews.push(body.clone());
        // Only the engine's namespace is bound to its Role.
        let allowed = field("namespace") == NS && !c.denied.contains(&asked);
        let mut review = body.clone();
        review["metadata"] = json!({"creationTimestamp": null});
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"coding-swarm-engine/coding-swarm\" of Role \"coding-swarm-engine\" to ServiceAccount \"coding-swarm-engine/coding-swarm\""})
        } else {
            json!({"allowed": false})
        };
        return Some((StatusCode::CREATED, axum::Json(review)).into_response());
    }
    None
}
