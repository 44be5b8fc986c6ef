//! What the fake API server checks, as the real one does: the validation of a Job (names,
//! labels, containers, restart policy) and of a ConfigMap (name, keys, 1 MiB), and label
//! selectors. Pure.

use serde_json::Value;

/// DNS-1123 subdomain: what `metadata.name` of a Job must be
/// (<https://kubernetes.io/docs/concepts/overview/working-with-objects/names/>).
fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A label value: at most 63 characters, alphanumeric at both ends, `-_.` inside
/// (<https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set>).
fn label_value_ok(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// A label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(dns_subdomain) && !name.is_empty() && label_value_ok(name)
}

/// A problem validation finds: field, cause reason, message.
pub type Problem = (String, &'static str, String);

/// What validation says about an object's `metadata.name`, which must be a DNS-1123 subdomain.
fn name_problem(object: &Value) -> Option<Problem> {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    if name.is_empty() {
        return Some((
            "metadata.name".into(),
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        ));
    }
    (!dns_subdomain(name)).then(|| ("metadata.name".into(), "FieldValueInvalid", format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")))
}

/// What the API server's validation says about a Job: (field, cause reason, message) for each
/// problem.
pub fn validate_job(job: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    if let Some(p) = name_problem(job) {
        problems.push(p);
    } else if name.len() > 63 {
        // The Job's name becomes the `job-name` label of its pods, and a label value has at
        // most 63 characters.
        problems.push((
            "metadata.name".into(),
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": must be no more than 63 characters"),
        ));
    }
    for (at, labels) in [
        ("metadata.labels", &job["metadata"]["labels"]),
        (
            "spec.template.metadata.labels",
            &job["spec"]["template"]["metadata"]["labels"],
        ),
    ] {
        for (k, v) in labels.as_object().into_iter().flatten() {
            let v = v.as_str().unwrap_or("");
            if !label_key_ok(k) {
                problems.push((
                    at.into(),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'"),
                ));
            }
            if !label_value_ok(v) {
                problems.push((at.into(), "FieldValueInvalid", format!("Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, and at most 63 characters")));
            }
        }
    }
    let pod = &job["spec"]["template"]["spec"];
    if !pod["containers"]
        .as_array()
        .is_some_and(|cs| !cs.is_empty())
    {
        problems.push((
            "spec.template.spec.containers".into(),
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    // Init containers and containers alike (pkg/apis/core/validation: validateInitContainers,
    // validateContainers): a name unique in the pod, an image, environment variable names,
    // and mounts of volumes the pod declares.
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut names = std::collections::HashSet::new();
    for field in ["initContainers", "containers"] {
        for (i, c) in pod[field].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.template.spec.{field}[{i}]");
            match c["name"].as_str().filter(|n| !n.is_empty()) {
                None => problems.push((
                    format!("{at}.name"),
                    "FieldValueRequired",
                    "Required value".into(),
                )),
                Some(n) if !names.insert(n.to_string()) => problems.push((
                    format!("{at}.name"),
                    "FieldValueDuplicate",
                    format!("Duplicate value: \"{n}\""),
                )),
                Some(_) => {}
            }
            if c["image"].as_str().is_none_or(str::is_empty) {
                problems.push((
                    format!("{at}.image"),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
            for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
                let n = e["name"].as_str().unwrap_or("");
                let ok = !n.is_empty()
                    && !n.starts_with(|ch: char| ch.is_ascii_digit())
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !ok {
                    problems.push((format!("{at}.env[{j}].name"), "FieldValueInvalid", format!("Invalid value: \"{n}\": a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit")));
                }
                if e["value"].is_string() && !e["valueFrom"].is_null() {
                    problems.push((
                        format!("{at}.env[{j}].valueFrom"),
                        "FieldValueInvalid",
                        "Invalid value: \"\": may not be specified when `value` is not empty"
                            .into(),
                    ));
                }
            }
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let n = m["name"].as_str().unwrap_or("");
                if !volumes.contains(&n) {
                    problems.push((
                        format!("{at}.volumeMounts[{j}].name"),
                        "FieldValueNotFound",
                        format!("Not found: \"{n}\""),
                    ));
                }
            }
        }
    }
    if !matches!(pod["restartPolicy"].as_str(), Some("Never" | "OnFailure")) {
        problems.push((
            "spec.template.spec.restartPolicy".into(),
            "FieldValueRequired",
            "Required value: valid values: \"OnFailure\", \"Never\"".into(),
        ));
    }
    problems
}

/// The most a ConfigMap may hold, `data` and `binaryData` together (`MaxSecretSize`, 1 MiB:
/// <https://kubernetes.io/docs/concepts/configuration/configmap/>).
pub const MAX_CONFIG_MAP_BYTES: usize = 1024 * 1024;

/// What the API server's validation says about a ConfigMap: its name, its keys (alphanumeric,
/// `-`, `_`, `.`), its size and its owner references.
pub fn validate_config_map(map: &Value) -> Vec<Problem> {
    let mut problems: Vec<Problem> = name_problem(map).into_iter().collect();
    let mut size = 0;
    for field in ["data", "binaryData"] {
        for (k, v) in map[field].as_object().into_iter().flatten() {
            let key_ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !key_ok {
                problems.push((format!("{field}[{k}]"), "FieldValueInvalid", format!("Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
    }
    if size > MAX_CONFIG_MAP_BYTES {
        problems.push((
            "[]".into(),
            "FieldValueTooLong",
            format!("Too long: must have at most {MAX_CONFIG_MAP_BYTES} bytes"),
        ));
    }
    for (i, r) in map["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if r[field].as_str().is_none_or(str::is_empty) {
                problems.push((
                    format!("metadata.ownerReferences[{i}].{field}"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"\": {field} must not be empty"),
                ));
            }
        }
    }
    problems
}

/// One requirement of a label selector (equality-based `=`, `==`, `!=` and set-based `in`,
/// `notin`, `key`, `!key`:
/// <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors>).
#[derive(Debug, Clone)]
pub enum Requirement {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Parses a label selector; an error is what the API server answers 400 with.
pub fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    // Split on the commas between requirements, not those inside `in (a,b)`.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    let mut out = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let bad = || format!("unable to parse requirement: found '{term}'");
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let req = if let Some(k) = term.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_string())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            Requirement::NotIn(k.trim().to_string(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            Requirement::In(k.trim().to_string(), set(rest)?)
        } else if let Some((k, v)) = term.split_once("!=") {
            Requirement::Ne(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==") {
            Requirement::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once('=') {
            Requirement::Eq(k.trim().to_string(), v.trim().to_string())
        } else if term.contains([' ', '(', ')']) {
            return Err(bad());
        } else {
            Requirement::Exists(term.to_string())
        };
        out.push(req);
    }
    Ok(out)
}

/// Whether an object's labels satisfy every requirement. `!=` and `notin` also match objects
/// without the key, as in Kubernetes.
pub fn selects(selector: &[Requirement], object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    selector.iter().all(|r| match r {
        Requirement::Eq(k, v) => get(k) == Some(v),
        Requirement::Ne(k, v) => get(k) != Some(v),
        Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    })
}
