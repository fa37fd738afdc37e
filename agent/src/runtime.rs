//! Who a cgroup belongs to: pod and container identity from cgroup names, container runtime state files and
//! the kubelet's log directories, all read under the agent's root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Kubernetes identity of one cgroup, with cAdvisor's label names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `namespace`.
    pub namespace: String,
    /// `pod`.
    pub pod: String,
    /// `container`: empty for pod-level cgroups and sandbox (pause) containers.
    pub container: String,
    /// `image`: empty for pod-level cgroups.
    pub image: String,
    /// `name`: the container id for containers, empty otherwise.
    pub name: String,
    /// The pod's own labels, sorted, when this is a sandbox whose runtime keeps them (Docker and CRI-O do;
    /// containerd does not write them to any file).
    pub pod_labels: Vec<(String, String)>,
}

/// What a cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupKind {
    /// The root cgroup (`/`): the whole node.
    Root,
    /// A pod-level cgroup with the pod's uid.
    Pod { uid: String },
    /// A container leaf with its pod uid and 64-hex container id.
    Container { pod_uid: String, id: String },
    /// Anything else under `kubepods` (QoS classes, CRI-O's conmon scopes).
    Other,
}

/// Classifies a cgroup path such as `/kubepods.slice/…/cri-containerd-<id>.scope` or `/kubepods/burstable/pod<uid>/<id>`.
pub fn classify(cgroup: &str) -> CgroupKind {
    if cgroup == "/" {
        return CgroupKind::Root;
    }
    let mut pod_uid = None;
    let mut components = cgroup.split('/').filter(|c| !c.is_empty()).peekable();
    while let Some(component) = components.next() {
        if let Some(uid) = pod_uid_of(component) {
            pod_uid = Some(uid);
            continue;
        }
        let Some(uid) = &pod_uid else { continue };
        if components.peek().is_none() {
            return match container_id_of(component) {
                Some(id) => CgroupKind::Container { pod_uid: uid.clone(), id: id.to_owned() },
                None => CgroupKind::Other,
            };
        }
    }
    match (pod_uid, cgroup.rsplit('/').next()) {
        (Some(uid), Some(last)) if pod_uid_of(last).is_some() => CgroupKind::Pod { uid },
        _ => CgroupKind::Other,
    }
}

/// `kubepods-burstable-pod<uid_>.slice`, `kubepods-pod<uid_>.slice` (systemd) or `pod<uid>` (cgroupfs).
fn pod_uid_of(component: &str) -> Option<String> {
    let systemd = component.strip_suffix(".slice").and_then(|name| name.rsplit_once("-pod")).map(|(_, uid)| uid);
    let raw = systemd.or_else(|| component.strip_prefix("pod"))?;
    let uid = raw.replace('_', "-");
    let well_formed = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    well_formed.then_some(uid)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` or a bare 64-hex directory.
fn container_id_of(component: &str) -> Option<&str> {
    let scoped = component
        .strip_suffix(".scope")
        .and_then(|name| ["cri-containerd-", "crio-", "docker-"].iter().find_map(|prefix| name.strip_prefix(prefix)));
    let id = scoped.unwrap_or(component);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Resolves identities, remembering containers already seen (their metadata never changes).
#[derive(Debug)]
pub struct Resolver {
    root: PathBuf,
    containers: HashMap<String, Identity>,
}

impl Resolver {
    /// A resolver reading runtime state under `root`.
    pub fn new(root: &Path) -> Self {
        Resolver { root: root.to_owned(), containers: HashMap::new() }
    }

    /// The identity of a classified cgroup; `None` for the root and unrecognised cgroups.
    pub fn identity(&mut self, kind: &CgroupKind, pods: &PodDirectory) -> Option<Identity> {
        match kind {
            CgroupKind::Root | CgroupKind::Other => None,
            CgroupKind::Pod { uid } => {
                let (namespace, pod) = pods.by_uid.get(uid)?.clone();
                Some(Identity { namespace, pod, ..Identity::default() })
            }
            CgroupKind::Container { pod_uid, id } => {
                if let Some(known) = self.containers.get(id) {
                    return Some(known.clone());
                }
                let found = self.container_from_runtime(id).or_else(|| pods.container(pod_uid, id))?;
                self.containers.insert(id.clone(), found.clone());
                Some(found)
            }
        }
    }

    /// Forgets containers that no longer exist so the cache does not grow without bound.
    pub fn retain(&mut self, live: &std::collections::HashSet<String>) {
        self.containers.retain(|id, _| live.contains(id));
    }

    /// containerd and CRI-O keep the OCI spec with Kubernetes annotations; Docker keeps its own config with labels.
    fn container_from_runtime(&self, id: &str) -> Option<Identity> {
        let oci_specs = [
            format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            format!("run/containers/storage/overlay-containers/{id}/userdata/config.json"),
        ];
        for relative in oci_specs {
            if let Some(identity) = read_json(&self.root.join(relative)).and_then(|spec| oci_identity(&spec, id)) {
                return Some(identity);
            }
        }
        let docker = read_json(&self.root.join(format!("var/lib/docker/containers/{id}/config.v2.json")))?;
        docker_identity(&docker, id)
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Annotations of containerd (`io.kubernetes.cri.*`) or CRI-O (`io.kubernetes.*`, `io.kubernetes.cri-o.*`).
fn oci_identity(spec: &serde_json::Value, id: &str) -> Option<Identity> {
    let annotations = spec.get("annotations")?;
    let get = |keys: &[&str]| {
        keys.iter().find_map(|key| annotations.get(*key).and_then(|v| v.as_str())).unwrap_or_default().to_owned()
    };
    let sandbox = get(&["io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"]) == "sandbox";
    let identity = Identity {
        namespace: get(&["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"]),
        pod: get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]),
        container: if sandbox {
            String::new()
        } else {
            get(&["io.kubernetes.cri.container-name", "io.kubernetes.container.name"])
        },
        image: get(&["io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"]),
        name: id.to_owned(),
        pod_labels: if sandbox { crio_pod_labels(annotations) } else { Vec::new() },
    };
    (!identity.pod.is_empty()).then_some(identity)
}

/// Docker's `config.v2.json`: the kubelet's `io.kubernetes.*` labels and the image reference.
fn docker_identity(config: &serde_json::Value, id: &str) -> Option<Identity> {
    let config = config.get("Config")?;
    let labels = config.get("Labels")?;
    let label = |key: &str| labels.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let container = label("io.kubernetes.container.name");
    let sandbox = container == "POD";
    let mut identity = Identity {
        namespace: label("io.kubernetes.pod.namespace"),
        pod: label("io.kubernetes.pod.name"),
        container: if sandbox { String::new() } else { container },
        image: config.get("Image").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
        name: id.to_owned(),
        pod_labels: Vec::new(),
    };
    if sandbox {
        // The sandbox carries the pod's labels beside the kubelet's own and its `annotation.*` copies.
        let labels = labels.as_object().into_iter().flatten();
        identity.pod_labels = own_labels(labels.filter(|(key, _)| !key.starts_with("annotation.")));
    }
    (!identity.pod.is_empty()).then_some(identity)
}

/// CRI-O's sandbox spec keeps the pod's labels as a JSON object in one annotation.
fn crio_pod_labels(annotations: &serde_json::Value) -> Vec<(String, String)> {
    let Some(text) = annotations.get("io.kubernetes.cri-o.Labels").and_then(|v| v.as_str()) else {
        return Vec::new();
    };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
        Ok(labels) => own_labels(labels.iter()),
        Err(_) => Vec::new(),
    }
}

/// The string-valued labels that are not the kubelet's `io.kubernetes.*` bookkeeping, sorted.
fn own_labels<'a>(labels: impl Iterator<Item = (&'a String, &'a serde_json::Value)>) -> Vec<(String, String)> {
    let mut own: Vec<(String, String)> = labels
        .filter(|(key, _)| !key.starts_with("io.kubernetes."))
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
        .collect();
    own.sort();
    own
}

/// The kubelet's log directories: `/var/log/pods/<ns>_<pod>_<uid>/` and the
/// `/var/log/containers/<pod>_<ns>_<container>-<id>.log` links, read once per collection.
#[derive(Debug, Default)]
pub struct PodDirectory {
    by_uid: HashMap<String, (String, String)>,
    containers: HashMap<String, (String, String, String)>,
}

impl PodDirectory {
    /// Lists the pod and container log directories under `root`; missing directories give an empty listing.
    pub fn read(root: &Path) -> Self {
        let mut directory = PodDirectory::default();
        for name in file_names(&root.join("var/log/pods")) {
            let mut parts = name.splitn(3, '_');
            if let (Some(ns), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next()) {
                directory.by_uid.insert(uid.to_owned(), (ns.to_owned(), pod.to_owned()));
            }
        }
        for name in file_names(&root.join("var/log/containers")) {
            let Some(stem) = name.strip_suffix(".log") else { continue };
            let Some((rest, id)) = stem.rsplit_once('-') else { continue };
            let mut parts = rest.splitn(3, '_');
            if let (Some(pod), Some(ns), Some(container)) = (parts.next(), parts.next(), parts.next()) {
                directory.containers.insert(id.to_owned(), (ns.to_owned(), pod.to_owned(), container.to_owned()));
            }
        }
        directory
    }

    /// A container known from its log link (no image: the link does not record it).
    fn container(&self, pod_uid: &str, id: &str) -> Option<Identity> {
        let (namespace, pod, container) = match self.containers.get(id) {
            Some(found) => found.clone(),
            None => {
                let (namespace, pod) = self.by_uid.get(pod_uid)?.clone();
                (namespace, pod, String::new())
            }
        };
        Some(Identity { namespace, pod, container, name: id.to_owned(), ..Identity::default() })
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "8d2f6c1e-5b7a-4c3d-9e8f-001122334455";

    #[test]
    fn systemd_and_cgroupfs_paths_classify_alike() {
        let systemd_pod =
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8d2f6c1e_5b7a_4c3d_9e8f_001122334455.slice";
        let cgroupfs_pod = format!("/kubepods/burstable/pod{UID}");
        for pod in [systemd_pod.to_owned(), cgroupfs_pod.clone()] {
            assert_eq!(classify(&pod), CgroupKind::Pod { uid: UID.into() }, "{pod}");
        }
        let container = CgroupKind::Container { pod_uid: UID.into(), id: ID.into() };
        for leaf in [format!("cri-containerd-{ID}.scope"), format!("crio-{ID}.scope"), format!("docker-{ID}.scope")] {
            assert_eq!(classify(&format!("{systemd_pod}/{leaf}")), container, "{leaf}");
        }
        assert_eq!(classify(&format!("{cgroupfs_pod}/{ID}")), container);
        assert_eq!(classify(&format!("/kubepods/pod{UID}/{ID}")), container, "guaranteed pods sit under kubepods");
        assert_eq!(classify(&format!("{systemd_pod}/crio-conmon-{ID}.scope")), CgroupKind::Other);
        assert_eq!(classify("/kubepods.slice/kubepods-besteffort.slice"), CgroupKind::Other);
        assert_eq!(classify("/"), CgroupKind::Root);
    }

    #[test]
    fn runtime_state_wins_over_log_links() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join(format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}"));
        std::fs::create_dir_all(&bundle).unwrap();
        let spec = serde_json::json!({"annotations": {
            "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "nginx",
            "io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.image-name": "nginx:1.27"}});
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        std::fs::create_dir_all(dir.path().join(format!("var/log/pods/shop_web-0_{UID}/nginx"))).unwrap();
        let pods = PodDirectory::read(dir.path());
        let mut resolver = Resolver::new(dir.path());
        let kind = CgroupKind::Container { pod_uid: UID.into(), id: ID.into() };
        let identity = resolver.identity(&kind, &pods).unwrap();
        assert_eq!((identity.namespace.as_str(), identity.pod.as_str()), ("shop", "web-0"));
        assert_eq!((identity.container.as_str(), identity.image.as_str()), ("nginx", "nginx:1.27"));
        let pod = resolver.identity(&CgroupKind::Pod { uid: UID.into() }, &pods).unwrap();
        assert_eq!((pod.pod.as_str(), pod.container.as_str()), ("web-0", ""));
    }

    /// Resolves container `ID` with `file` (relative to the root) holding `contents`.
    fn resolve_from(file: &str, contents: &serde_json::Value) -> Identity {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents.to_string()).unwrap();
        let kind = CgroupKind::Container { pod_uid: UID.into(), id: ID.into() };
        Resolver::new(dir.path()).identity(&kind, &PodDirectory::default()).unwrap()
    }

    #[test]
    fn sandboxes_of_crio_and_docker_carry_the_pods_own_labels() {
        let labels =
            r#"{"app":"web","io.kubernetes.pod.name":"web-0","io.kubernetes.container.name":"POD","tier":"front"}"#;
        let crio = serde_json::json!({"annotations": {
            "io.kubernetes.cri-o.ContainerType": "sandbox", "io.kubernetes.pod.name": "web-0",
            "io.kubernetes.pod.namespace": "shop", "io.kubernetes.cri-o.Labels": labels}});
        let path = format!("run/containers/storage/overlay-containers/{ID}/userdata/config.json");
        let identity = resolve_from(&path, &crio);
        let expected = vec![("app".to_owned(), "web".to_owned()), ("tier".to_owned(), "front".to_owned())];
        assert_eq!((identity.pod.as_str(), identity.container.as_str()), ("web-0", ""));
        assert_eq!(identity.pod_labels, expected);

        let docker = serde_json::json!({"Config": {"Image": "pause:3.10", "Labels": {
            "app": "web", "tier": "front", "annotation.kubernetes.io/config.seen": "x",
            "io.kubernetes.container.name": "POD", "io.kubernetes.docker.type": "podsandbox",
            "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop"}}});
        let identity = resolve_from(&format!("var/lib/docker/containers/{ID}/config.v2.json"), &docker);
        assert_eq!((identity.namespace.as_str(), identity.container.as_str()), ("shop", ""));
        assert_eq!(identity.pod_labels, expected);

        // An application container's labels are the kubelet's, not the pod's.
        let mut app = docker.clone();
        app["Config"]["Labels"]["io.kubernetes.container.name"] = "server".into();
        let identity = resolve_from(&format!("var/lib/docker/containers/{ID}/config.v2.json"), &app);
        assert_eq!((identity.container.as_str(), identity.pod_labels.len()), ("server", 0));
    }

    #[test]
    fn log_links_name_containers_without_runtime_state() {
        let dir = tempfile::tempdir().unwrap();
        let links = dir.path().join("var/log/containers");
        std::fs::create_dir_all(&links).unwrap();
        std::fs::write(links.join(format!("api-7d9f_prod_server-{ID}.log")), "").unwrap();
        let pods = PodDirectory::read(dir.path());
        let kind = CgroupKind::Container { pod_uid: UID.into(), id: ID.into() };
        let identity = Resolver::new(dir.path()).identity(&kind, &pods).unwrap();
        assert_eq!((identity.namespace.as_str(), identity.pod.as_str()), ("prod", "api-7d9f"));
        assert_eq!(identity.container, "server");
        assert_eq!(Resolver::new(dir.path()).identity(&CgroupKind::Pod { uid: UID.into() }, &pods), None);
    }
}
