//! Kubernetes pod discovery: Prometheus's `kubernetes_sd_configs` with `role: pod`, for the pods of the
//! agent's own node. The pods are listed from the API server (`/api/v1/pods`, or per namespace, with the
//! field selector `spec.nodeName=<node>`) and every container port becomes a target `<pod IP>:<port>` (a
//! container without ports becomes one target `<pod IP>`) labelled with Prometheus's
//! `__meta_kubernetes_pod_*` labels. The `prometheus.io/scrape`, `port` and `path` annotations are then
//! applied by `relabel_configs`, as in Prometheus (the DaemonSet's configuration has those rules).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::discovery::TargetGroup;
use crate::error::AgentError;

/// The largest pod list read (a node runs at most a few hundred pods).
const MAX_LIST_BYTES: u64 = 64 << 20;

/// How often the pods are listed again, by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// One `kubernetes_sd_configs` entry (`role: pod`).
#[derive(Debug, Clone, Default)]
pub struct KubernetesSd {
    /// `https://host:port` of the API server.
    pub api_server: String,
    /// Namespaces listed (all when empty).
    pub namespaces: Vec<String>,
    /// Only pods scheduled on this node (`spec.nodeName`), when set.
    pub node: Option<String>,
    /// File holding the bearer token sent to the API server.
    pub bearer_token_file: Option<PathBuf>,
    /// PEM CA certificate trusted for the API server (beside the public roots).
    pub ca_file: Option<PathBuf>,
    /// Accept any API server certificate.
    pub insecure_skip_verify: bool,
    /// How often the pods are listed.
    pub refresh_interval: Duration,
    /// The groups of the last list that succeeded, kept while the API server cannot be reached.
    pub last_known: Arc<Mutex<Vec<TargetGroup>>>,
}

impl KubernetesSd {
    /// The target groups of the pods now: one per container port (or per container without ports). When
    /// the API server cannot be asked, the last groups listed, with the error.
    pub fn groups(&self) -> (Vec<TargetGroup>, Option<AgentError>) {
        let listed = self.list();
        let mut last_known = self.last_known.lock().expect("last known lock");
        match listed {
            Ok(groups) => {
                *last_known = groups.clone();
                (groups, None)
            }
            Err(error) => (last_known.clone(), Some(error)),
        }
    }

    fn list(&self) -> Result<Vec<TargetGroup>, AgentError> {
        let agent = self.client()?;
        let token = match &self.bearer_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| AgentError::Read { path: path.clone(), source })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let namespaces: Vec<Option<&str>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut groups = Vec::new();
        for namespace in namespaces {
            let url = self.list_url(namespace);
            let mut request = agent.get(&url);
            if let Some(token) = &token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let api_error = |reason: String| AgentError::Api { url: url.clone(), reason };
            let mut response = request.call().map_err(|e| api_error(e.to_string()))?;
            if response.status() != 200 {
                return Err(api_error(format!("status {}", response.status())));
            }
            let body = response.body_mut().with_config().limit(MAX_LIST_BYTES).read_to_vec();
            let body = body.map_err(|e| api_error(e.to_string()))?;
            let list: PodList = serde_json::from_slice(&body).map_err(|e| api_error(e.to_string()))?;
            groups.extend(list.items.iter().flat_map(pod_groups));
        }
        Ok(groups)
    }

    fn list_url(&self, namespace: Option<&str>) -> String {
        let base = self.api_server.trim_end_matches('/');
        let path = match namespace {
            Some(namespace) => format!("/api/v1/namespaces/{namespace}/pods"),
            None => "/api/v1/pods".to_owned(),
        };
        match &self.node {
            Some(node) => format!("{base}{path}?fieldSelector=spec.nodeName%3D{node}"),
            None => format!("{base}{path}"),
        }
    }

    fn client(&self) -> Result<ureq::Agent, AgentError> {
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(self.insecure_skip_verify);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|source| AgentError::Read { path: path.clone(), source })?;
            let certificate = ureq::tls::Certificate::from_pem(&pem)
                .map_err(|e| AgentError::Format { path: path.clone(), reason: e.to_string() })?;
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![certificate])));
        }
        Ok(ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into())
    }
}

/// The part of a `PodList` that discovery reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodList {
    items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pod {
    metadata: ObjectMeta,
    spec: PodSpec,
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ObjectMeta {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OwnerReference {
    kind: String,
    name: String,
    controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    node_name: String,
    containers: Vec<Container>,
    init_containers: Vec<Container>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Container {
    name: String,
    image: String,
    ports: Vec<ContainerPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerPort {
    name: String,
    container_port: u16,
    protocol: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    #[serde(rename = "podIP")]
    pod_ip: String,
    #[serde(rename = "hostIP")]
    host_ip: String,
    phase: String,
    conditions: Vec<Condition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

/// A label name made of the characters Prometheus allows (others become `_`).
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// `host:port`, with an IPv6 host in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The pod-level `__meta_kubernetes_*` labels of `pod`.
fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    let meta = &pod.metadata;
    let mut labels = BTreeMap::from([
        ("__meta_kubernetes_namespace".to_owned(), meta.namespace.clone()),
        ("__meta_kubernetes_pod_name".to_owned(), meta.name.clone()),
        ("__meta_kubernetes_pod_ip".to_owned(), pod.status.pod_ip.clone()),
        ("__meta_kubernetes_pod_uid".to_owned(), meta.uid.clone()),
        ("__meta_kubernetes_pod_node_name".to_owned(), pod.spec.node_name.clone()),
        ("__meta_kubernetes_pod_host_ip".to_owned(), pod.status.host_ip.clone()),
        ("__meta_kubernetes_pod_phase".to_owned(), pod.status.phase.clone()),
    ]);
    let ready = pod.status.conditions.iter().find(|c| c.kind == "Ready");
    let ready = ready.map_or("unknown".to_owned(), |c| c.status.to_ascii_lowercase());
    labels.insert("__meta_kubernetes_pod_ready".into(), ready);
    for (kind, map) in [("label", &meta.labels), ("annotation", &meta.annotations)] {
        for (name, value) in map {
            let name = sanitize(name);
            labels.insert(format!("__meta_kubernetes_pod_{kind}_{name}"), value.clone());
            labels.insert(format!("__meta_kubernetes_pod_{kind}present_{name}"), "true".into());
        }
    }
    if let Some(owner) = meta.owner_references.iter().find(|o| o.controller == Some(true)) {
        labels.insert("__meta_kubernetes_pod_controller_kind".into(), owner.kind.clone());
        labels.insert("__meta_kubernetes_pod_controller_name".into(), owner.name.clone());
    }
    labels
}

/// The target groups of one pod (none before it has an IP).
fn pod_groups(pod: &Pod) -> Vec<TargetGroup> {
    let ip = &pod.status.pod_ip;
    if ip.is_empty() {
        return Vec::new();
    }
    let shared = pod_labels(pod);
    let containers =
        pod.spec.containers.iter().map(|c| (c, false)).chain(pod.spec.init_containers.iter().map(|c| (c, true)));
    let mut groups = Vec::new();
    for (container, init) in containers {
        let mut labels = shared.clone();
        labels.insert("__meta_kubernetes_pod_container_name".into(), container.name.clone());
        labels.insert("__meta_kubernetes_pod_container_image".into(), container.image.clone());
        labels.insert("__meta_kubernetes_pod_container_init".into(), init.to_string());
        if container.ports.is_empty() {
            groups.push(TargetGroup { targets: vec![ip.clone()], labels });
            continue;
        }
        for port in &container.ports {
            let mut labels = labels.clone();
            labels.insert("__meta_kubernetes_pod_container_port_name".into(), port.name.clone());
            labels.insert("__meta_kubernetes_pod_container_port_number".into(), port.container_port.to_string());
            let protocol = if port.protocol.is_empty() { "TCP" } else { port.protocol.as_str() };
            labels.insert("__meta_kubernetes_pod_container_port_protocol".into(), protocol.to_owned());
            groups.push(TargetGroup { targets: vec![join_host_port(ip, port.container_port)], labels });
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pods as the API server lists them: one annotated for scraping, one still pending (no IP).
    pub(crate) const POD_LIST: &str = r#"{
      "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "42"},
      "items": [
        {"metadata": {"name": "web-7d4f9", "namespace": "shop", "uid": "u-1",
                      "labels": {"app.kubernetes.io/name": "web", "pod-template-hash": "7d4f9"},
                      "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102"},
                      "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d", "controller": true}]},
         "spec": {"nodeName": "node-a",
                  "containers": [{"name": "nginx", "image": "nginx:1.27",
                                  "ports": [{"name": "http", "containerPort": 80},
                                            {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]},
                                 {"name": "sidecar", "image": "envoy:1"}],
                  "initContainers": [{"name": "setup", "image": "busybox"}]},
         "status": {"phase": "Running", "podIP": "10.1.2.3", "hostIP": "192.168.0.10",
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "pending", "namespace": "shop"},
         "spec": {"containers": [{"name": "app", "image": "app:1"}]},
         "status": {"phase": "Pending"}}
      ]}"#;

    #[test]
    fn every_container_port_of_a_running_pod_is_a_target_with_prometheus_meta_labels() {
        let list: PodList = serde_json::from_str(POD_LIST).unwrap();
        let groups: Vec<TargetGroup> = list.items.iter().flat_map(pod_groups).collect();
        let targets: Vec<&str> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(targets, ["10.1.2.3:80", "10.1.2.3:9102", "10.1.2.3", "10.1.2.3"], "the pending pod has none");
        let metrics = &groups[1].labels;
        for (name, value) in [
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_pod_name", "web-7d4f9"),
            ("__meta_kubernetes_pod_ip", "10.1.2.3"),
            ("__meta_kubernetes_pod_node_name", "node-a"),
            ("__meta_kubernetes_pod_ready", "true"),
            ("__meta_kubernetes_pod_phase", "Running"),
            ("__meta_kubernetes_pod_label_app_kubernetes_io_name", "web"),
            ("__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name", "true"),
            ("__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true"),
            ("__meta_kubernetes_pod_annotation_prometheus_io_port", "9102"),
            ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
            ("__meta_kubernetes_pod_container_name", "nginx"),
            ("__meta_kubernetes_pod_container_port_name", "metrics"),
            ("__meta_kubernetes_pod_container_port_number", "9102"),
            ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
            ("__meta_kubernetes_pod_container_init", "false"),
        ] {
            assert_eq!(metrics.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert_eq!(groups[3].labels["__meta_kubernetes_pod_container_init"], "true");
        assert!(!groups[2].labels.contains_key("__meta_kubernetes_pod_container_port_number"));
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
    }

    #[test]
    fn the_list_is_asked_for_the_node_and_namespaces() {
        let sd = KubernetesSd {
            api_server: "https://10.96.0.1:443/".into(),
            namespaces: Vec::new(),
            node: Some("node-a".into()),
            bearer_token_file: None,
            ca_file: None,
            ..KubernetesSd::default()
        };
        assert_eq!(sd.list_url(None), "https://10.96.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a");
        assert_eq!(
            sd.list_url(Some("shop")),
            "https://10.96.0.1:443/api/v1/namespaces/shop/pods?fieldSelector=spec.nodeName%3Dnode-a"
        );
    }
}
