//! The Kubernetes Metrics API (`metrics.k8s.io/v1beta1`) as metrics-server serves it, plus the read side of
//! the core API that `kubectl top` needs (discovery and `/api/v1/nodes`), computed from the agent's
//! cAdvisor-compatible series.
//!
//! Usage follows metrics-server: CPU is the rate between the last two samples of
//! `container_cpu_usage_seconds_total` (nanocores, `window` = their distance), memory the last
//! `container_memory_working_set_bytes`. Nodes are the root cgroup (`id="/"`) of each `node`; pods are their
//! containers (`container!=""`). Node capacity comes from `machine_cpu_cores` and `machine_memory_bytes`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use vigil_tsdb::{MatchOp, Matcher, Queryable, Series};

/// How far back usage samples are looked for (the agent collects every 10 s by default).
const LOOKBACK_MS: i64 = 5 * 60 * 1000;

#[derive(Clone)]
struct K8sState {
    storage: Arc<dyn Queryable>,
}

/// Routes: `/api`, `/api/v1`, `/api/v1/nodes[/{name}]`, `/apis`, `/apis/metrics.k8s.io[/v1beta1]`,
/// `/apis/metrics.k8s.io/v1beta1/nodes[/{name}]`, `/apis/metrics.k8s.io/v1beta1/pods`,
/// `/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods[/{name}]`.
pub fn routes(storage: Arc<dyn Queryable>) -> Router {
    Router::new()
        .route("/api", get(core_versions))
        .route("/api/v1", get(core_resources))
        .route("/api/v1/nodes", get(node_list))
        .route("/api/v1/nodes/{name}", get(node_one))
        .route("/apis", get(group_list))
        .route("/apis/metrics.k8s.io", get(metrics_group))
        .route("/apis/metrics.k8s.io/v1beta1", get(metrics_resources))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(node_metrics_list))
        .route("/apis/metrics.k8s.io/v1beta1/nodes/{name}", get(node_metrics_one))
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(pod_metrics_all))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", get(pod_metrics_namespace))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}", get(pod_metrics_one))
        .with_state(K8sState { storage })
}

fn group_version() -> Value {
    json!({"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"})
}

async fn core_versions() -> Response {
    axum::Json(json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}))
    .into_response()
}

async fn core_resources() -> Response {
    axum::Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node", "verbs": ["get", "list"],
         "shortNames": ["no"]}]}))
    .into_response()
}

async fn group_list() -> Response {
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "metrics.k8s.io", "versions": [group_version()], "preferredVersion": group_version()}]}))
    .into_response()
}

async fn metrics_group() -> Response {
    axum::Json(json!({"kind": "APIGroup", "apiVersion": "v1", "name": "metrics.k8s.io",
        "versions": [group_version()], "preferredVersion": group_version()}))
    .into_response()
}

async fn metrics_resources() -> Response {
    axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]}))
    .into_response()
}

/// `labelSelector` and `fieldSelector` of list calls.
#[derive(Debug, Default, serde::Deserialize)]
struct ListParams {
    #[serde(rename = "labelSelector", default)]
    label_selector: String,
    #[serde(rename = "fieldSelector", default)]
    field_selector: String,
}

impl ListParams {
    /// True when `name` and `namespace` pass `fieldSelector` (`metadata.name`, `metadata.namespace`) and the
    /// object's labels, looked up by key through `label`, pass `labelSelector`.
    fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>, name: &str, namespace: &str) -> bool {
        let fields = [("metadata.name", name), ("metadata.namespace", namespace)];
        let field = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        requirements(&self.field_selector).all(|r| r.holds(field(r.key)))
            && requirements(&self.label_selector).all(|r| r.holds(label(r.key)))
    }
}

impl ListParams {
    /// [`ListParams::matches`] for a node, whose only label is `kubernetes.io/hostname`.
    fn matches_node(&self, name: &str) -> bool {
        let labels = node_labels(name);
        self.matches(|key| labels.get(key).map(String::as_str), name, "")
    }
}

/// One requirement of a Kubernetes selector.
#[derive(Debug, PartialEq)]
struct Requirement<'s> {
    key: &'s str,
    op: SelectorOp<'s>,
}

#[derive(Debug, PartialEq)]
enum SelectorOp<'s> {
    Equals(&'s str),
    NotEquals(&'s str),
    In(Vec<&'s str>),
    NotIn(Vec<&'s str>),
    Exists,
    NotExists,
}

impl Requirement<'_> {
    /// Whether an object whose value for the key is `actual` passes (`!=` and `notin` pass a missing key).
    fn holds(&self, actual: Option<&str>) -> bool {
        match &self.op {
            SelectorOp::Equals(value) => actual == Some(*value),
            SelectorOp::NotEquals(value) => actual != Some(*value),
            SelectorOp::In(values) => actual.is_some_and(|a| values.contains(&a)),
            SelectorOp::NotIn(values) => !actual.is_some_and(|a| values.contains(&a)),
            SelectorOp::Exists => actual.is_some(),
            SelectorOp::NotExists => actual.is_none(),
        }
    }
}

/// `a=b,c!=d,e,!f,g in (x,y),h notin (z)`: `==` is `=`, a bare key tests existence, `!key` absence.
fn requirements(selector: &str) -> impl Iterator<Item = Requirement<'_>> {
    top_level_commas(selector).into_iter().map(str::trim).filter(|r| !r.is_empty()).map(|text| {
        fn set(rest: &str) -> Vec<&str> {
            let inner = rest.trim().trim_start_matches('(').trim_end_matches(')');
            inner.split(',').map(str::trim).filter(|v| !v.is_empty()).collect()
        }
        if let Some((key, values)) = text.split_once(" notin ") {
            return Requirement { key: key.trim(), op: SelectorOp::NotIn(set(values)) };
        }
        if let Some((key, values)) = text.split_once(" in ") {
            return Requirement { key: key.trim(), op: SelectorOp::In(set(values)) };
        }
        if let Some((key, value)) = text.split_once("!=") {
            return Requirement { key: key.trim(), op: SelectorOp::NotEquals(value.trim()) };
        }
        if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
            return Requirement { key: key.trim(), op: SelectorOp::Equals(value.trim()) };
        }
        match text.strip_prefix('!') {
            Some(key) => Requirement { key: key.trim(), op: SelectorOp::NotExists },
            None => Requirement { key: text, op: SelectorOp::Exists },
        }
    })
}

/// Splits at commas outside parentheses, so `a in (x,y),b` is two requirements.
fn top_level_commas(selector: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (at, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
}

fn api_error(status: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    api_error(StatusCode::NOT_FOUND, "NotFound", format!("{kind} \"{name}\" not found"))
}

fn storage_error(error: vigil_tsdb::Error) -> Response {
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", error.to_string())
}

/// Series of `metric` with extra equality/inequality matchers, over the lookback window ending now.
fn select(
    storage: &dyn Queryable,
    metric: &str,
    matchers: &[(&str, MatchOp, &str)],
) -> Result<Vec<Series>, vigil_tsdb::Error> {
    let mut all = vec![Matcher::new(MatchOp::Equal, "__name__", metric)?];
    for (name, op, value) in matchers {
        all.push(Matcher::new(*op, *name, *value)?);
    }
    let now = Utc::now().timestamp_millis();
    storage.select(&all, now - LOOKBACK_MS, now)
}

/// (namespace, pod, container).
type ContainerKey = (String, String, String);

/// (nanocores, window ms, end timestamp ms).
type CpuRate = (u64, i64, i64);

/// CPU usage from a counter's last two samples.
fn cpu_rate(series: &Series) -> Option<CpuRate> {
    let [.., previous, last] = series.samples.as_slice() else { return None };
    let window = last.t - previous.t;
    let delta = last.v - previous.v;
    if window <= 0 || delta < 0.0 || last.v.is_nan() || previous.v.is_nan() {
        return None;
    }
    Some(((delta / (window as f64 / 1000.0) * 1e9).round() as u64, window, last.t))
}

fn last_value(series: &Series) -> Option<f64> {
    series.samples.last().map(|s| s.v).filter(|v| v.is_finite())
}

/// One node's usage.
struct NodeUsage {
    nanocores: u64,
    memory_bytes: u64,
    window_ms: i64,
    timestamp_ms: i64,
}

/// Usage by node name, from the root cgroup's series.
fn node_usage(storage: &dyn Queryable) -> Result<BTreeMap<String, NodeUsage>, vigil_tsdb::Error> {
    let root = [("id", MatchOp::Equal, "/"), ("node", MatchOp::NotEqual, "")];
    let memory: BTreeMap<String, f64> = select(storage, "container_memory_working_set_bytes", &root)?
        .iter()
        .filter_map(|s| Some((s.labels.get("node")?.to_owned(), last_value(s)?)))
        .collect();
    let mut usage = BTreeMap::new();
    for series in select(storage, "container_cpu_usage_seconds_total", &root)? {
        let Some(node) = series.labels.get("node") else { continue };
        let (Some((nanocores, window_ms, timestamp_ms)), Some(memory)) = (cpu_rate(&series), memory.get(node)) else {
            continue;
        };
        if nanocores == 0 || *memory <= 0.0 {
            continue;
        }
        usage.insert(node.to_owned(), NodeUsage { nanocores, memory_bytes: *memory as u64, window_ms, timestamp_ms });
    }
    Ok(usage)
}

/// Nodes that reported in the lookback window, with CPU cores and memory bytes.
fn node_capacity(storage: &dyn Queryable) -> Result<BTreeMap<String, (f64, f64)>, vigil_tsdb::Error> {
    let with_node = [("node", MatchOp::NotEqual, "")];
    let memory: BTreeMap<String, f64> = select(storage, "machine_memory_bytes", &with_node)?
        .iter()
        .filter_map(|s| Some((s.labels.get("node")?.to_owned(), last_value(s)?)))
        .collect();
    Ok(select(storage, "machine_cpu_cores", &with_node)?
        .iter()
        .filter_map(|s| {
            let node = s.labels.get("node")?.to_owned();
            let bytes = memory.get(&node).copied().unwrap_or(0.0);
            Some((node, (last_value(s)?, bytes)))
        })
        .collect())
}

fn node_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.to_owned())])
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A Kubernetes binary-SI quantity in canonical form: the largest power-of-1024 suffix that divides exactly.
pub fn binary_quantity(bytes: u64) -> String {
    let mut value = bytes;
    for suffix in ["", "Ki", "Mi", "Gi", "Ti", "Pi"] {
        if value % 1024 != 0 || value == 0 || suffix == "Pi" {
            return format!("{value}{suffix}");
        }
        value /= 1024;
    }
    format!("{value}Ei")
}

/// A Go `time.Duration` string for milliseconds (`500ms`, `15.02s`, `1m0.5s`).
pub fn go_duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = |ms: i64| match ms % 1000 {
        0 => format!("{}s", ms / 1000),
        fraction => format!("{}.{}s", ms / 1000, format!("{fraction:03}").trim_end_matches('0')),
    };
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    match (hours, minutes) {
        (0, 0) => seconds(rest),
        (0, m) => format!("{m}m{}", seconds(rest)),
        (h, m) => format!("{h}h{m}m{}", seconds(rest)),
    }
}

fn node_object(name: &str, cores: f64, memory_bytes: f64) -> Value {
    let resources = json!({"cpu": format_cores(cores), "memory": binary_quantity(memory_bytes as u64), "pods": "110"});
    json!({"kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "labels": node_labels(name)},
        "status": {"capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn format_cores(cores: f64) -> String {
    if cores.fract() == 0.0 { format!("{}", cores as u64) } else { format!("{}m", (cores * 1000.0).round() as u64) }
}

async fn node_list(State(state): State<K8sState>, Query(params): Query<ListParams>) -> Response {
    let capacity = match node_capacity(state.storage.as_ref()) {
        Ok(capacity) => capacity,
        Err(error) => return storage_error(error),
    };
    let items: Vec<Value> = capacity
        .iter()
        .filter(|(name, _)| params.matches_node(name))
        .map(|(name, (cores, memory))| node_object(name, *cores, *memory))
        .collect();
    axum::Json(json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items})).into_response()
}

async fn node_one(State(state): State<K8sState>, Path(name): Path<String>) -> Response {
    match node_capacity(state.storage.as_ref()) {
        Ok(capacity) => match capacity.get(&name) {
            Some((cores, memory)) => axum::Json(node_object(&name, *cores, *memory)).into_response(),
            None => not_found("nodes", &name),
        },
        Err(error) => storage_error(error),
    }
}

fn node_metrics_object(name: &str, usage: &NodeUsage) -> Value {
    json!({"metadata": {"name": name, "creationTimestamp": now_rfc3339(), "labels": node_labels(name)},
        "timestamp": rfc3339(usage.timestamp_ms), "window": go_duration(usage.window_ms),
        "usage": {"cpu": format!("{}n", usage.nanocores), "memory": binary_quantity(usage.memory_bytes)}})
}

async fn node_metrics_list(State(state): State<K8sState>, Query(params): Query<ListParams>) -> Response {
    let usage = match node_usage(state.storage.as_ref()) {
        Ok(usage) => usage,
        Err(error) => return storage_error(error),
    };
    let items: Vec<Value> = usage
        .iter()
        .filter(|(name, _)| params.matches_node(name))
        .map(|(name, usage)| node_metrics_object(name, usage))
        .collect();
    axum::Json(
        json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
    .into_response()
}

async fn node_metrics_one(State(state): State<K8sState>, Path(name): Path<String>) -> Response {
    match node_usage(state.storage.as_ref()) {
        Ok(usage) => match usage.get(&name) {
            Some(usage) => {
                let mut object = node_metrics_object(&name, usage);
                object["kind"] = json!("NodeMetrics");
                object["apiVersion"] = json!("metrics.k8s.io/v1beta1");
                axum::Json(object).into_response()
            }
            None => not_found("nodes.metrics.k8s.io", &name),
        },
        Err(error) => storage_error(error),
    }
}

/// One container's usage in a pod.
struct ContainerUsage {
    name: String,
    nanocores: u64,
    memory_bytes: u64,
}

/// A pod's usage: its containers, the widest window and latest timestamp among them.
#[derive(Default)]
struct PodUsage {
    containers: Vec<ContainerUsage>,
    window_ms: i64,
    timestamp_ms: i64,
    incomplete: bool,
}

/// Usage by (namespace, pod), optionally within one namespace. A pod with a container lacking CPU or
/// memory is left out, as metrics-server does.
fn pod_usage(
    storage: &dyn Queryable,
    namespace: Option<&str>,
) -> Result<BTreeMap<(String, String), PodUsage>, vigil_tsdb::Error> {
    let mut matchers = vec![("container", MatchOp::NotEqual, ""), ("pod", MatchOp::NotEqual, "")];
    if let Some(namespace) = namespace {
        matchers.push(("namespace", MatchOp::Equal, namespace));
    }
    let key = |s: &Series| -> Option<ContainerKey> {
        Some((
            s.labels.get("namespace")?.to_owned(),
            s.labels.get("pod")?.to_owned(),
            s.labels.get("container")?.to_owned(),
        ))
    };
    // The newest series of each container wins (a restarted container has a new id).
    let mut memory: BTreeMap<ContainerKey, (i64, f64)> = BTreeMap::new();
    for series in select(storage, "container_memory_working_set_bytes", &matchers)? {
        let (Some(key), Some(last)) = (key(&series), series.samples.last()) else { continue };
        let entry = memory.entry(key).or_insert((i64::MIN, 0.0));
        if last.t > entry.0 {
            *entry = (last.t, last.v);
        }
    }
    let mut cpu: BTreeMap<ContainerKey, (i64, Option<CpuRate>)> = BTreeMap::new();
    for series in select(storage, "container_cpu_usage_seconds_total", &matchers)? {
        let (Some(key), Some(last)) = (key(&series), series.samples.last()) else { continue };
        let entry = cpu.entry(key).or_insert((i64::MIN, None));
        if last.t > entry.0 {
            *entry = (last.t, cpu_rate(&series));
        }
    }
    let mut pods: BTreeMap<(String, String), PodUsage> = BTreeMap::new();
    for ((namespace, pod, container), (_, rate)) in cpu {
        let memory_bytes = memory.get(&(namespace.clone(), pod.clone(), container.clone())).map(|(_, v)| *v);
        let usage = pods.entry((namespace, pod)).or_default();
        let (Some((nanocores, window_ms, timestamp_ms)), Some(memory_bytes)) = (rate, memory_bytes) else {
            usage.incomplete = true;
            continue;
        };
        usage.window_ms = usage.window_ms.max(window_ms);
        usage.timestamp_ms = usage.timestamp_ms.max(timestamp_ms);
        usage.containers.push(ContainerUsage {
            name: container,
            nanocores,
            memory_bytes: memory_bytes.max(0.0) as u64,
        });
    }
    pods.retain(|_, usage| !usage.incomplete && !usage.containers.is_empty());
    Ok(pods)
}

/// One pod's labels by `kube_pod_labels` name.
type PodLabels = BTreeMap<String, String>;

/// Each pod's labels as the agent reported them in `kube_pod_labels` (names in `label_<key>` form), for the
/// pods whose runtime keeps them.
fn pod_labels(
    storage: &dyn Queryable,
    namespace: Option<&str>,
) -> Result<BTreeMap<(String, String), PodLabels>, vigil_tsdb::Error> {
    let mut matchers = vec![("pod", MatchOp::NotEqual, "")];
    if let Some(namespace) = namespace {
        matchers.push(("namespace", MatchOp::Equal, namespace));
    }
    let mut labels = BTreeMap::new();
    for series in select(storage, "kube_pod_labels", &matchers)? {
        let (Some(namespace), Some(pod)) = (series.labels.get("namespace"), series.labels.get("pod")) else { continue };
        let own = series.labels.iter().filter(|label| label.name.starts_with("label_"));
        let own = own.map(|label| (label.name.to_string(), label.value.to_string())).collect();
        labels.insert((namespace.to_owned(), pod.to_owned()), own);
    }
    Ok(labels)
}

/// The `kube_pod_labels` label name of a Kubernetes label key (kube-state-metrics' sanitizing).
fn pod_label_name(key: &str) -> String {
    let sanitized: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("label_{sanitized}")
}

fn pod_metrics_object(namespace: &str, name: &str, usage: &PodUsage) -> Value {
    let containers: Vec<Value> = usage
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "usage": {"cpu": format!("{}n", c.nanocores), "memory": binary_quantity(c.memory_bytes)}}))
        .collect();
    json!({"metadata": {"name": name, "namespace": namespace, "creationTimestamp": now_rfc3339()},
        "timestamp": rfc3339(usage.timestamp_ms), "window": go_duration(usage.window_ms), "containers": containers})
}

fn pod_metrics_list(storage: &dyn Queryable, namespace: Option<&str>, params: &ListParams) -> Response {
    let pods = match pod_usage(storage, namespace) {
        Ok(pods) => pods,
        Err(error) => return storage_error(error),
    };
    let labels = match pod_labels(storage, namespace) {
        Ok(labels) => labels,
        Err(error) => return storage_error(error),
    };
    let no_labels = BTreeMap::new();
    let items: Vec<Value> = pods
        .iter()
        .filter(|(pod, _)| {
            let labels = labels.get(*pod).unwrap_or(&no_labels);
            params.matches(|key| labels.get(&pod_label_name(key)).map(String::as_str), &pod.1, &pod.0)
        })
        .map(|((namespace, name), usage)| pod_metrics_object(namespace, name, usage))
        .collect();
    axum::Json(
        json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
    .into_response()
}

async fn pod_metrics_all(State(state): State<K8sState>, Query(params): Query<ListParams>) -> Response {
    pod_metrics_list(state.storage.as_ref(), None, &params)
}

async fn pod_metrics_namespace(
    State(state): State<K8sState>,
    Path(namespace): Path<String>,
    Query(params): Query<ListParams>,
) -> Response {
    pod_metrics_list(state.storage.as_ref(), Some(&namespace), &params)
}

async fn pod_metrics_one(State(state): State<K8sState>, Path((namespace, name)): Path<(String, String)>) -> Response {
    let pods = match pod_usage(state.storage.as_ref(), Some(&namespace)) {
        Ok(pods) => pods,
        Err(error) => return storage_error(error),
    };
    match pods.get(&(namespace.clone(), name.clone())) {
        Some(usage) => {
            let mut object = pod_metrics_object(&namespace, &name, usage);
            object["kind"] = json!("PodMetrics");
            object["apiVersion"] = json!("metrics.k8s.io/v1beta1");
            axum::Json(object).into_response()
        }
        None => not_found("pods.metrics.k8s.io", &name),
    }
}

#[cfg(test)]
mod tests;
