use super::*;
use crate::fixture::{CgroupVersion, Driver, FixtureContainer, NodeFixture};

const MIB: f64 = 1024.0 * 1024.0;

/// Points by (name, id label), so lookups stay cheap over thousands of points.
struct Index<'a>(HashMap<(&'a str, &'a str), Vec<&'a Point>>);

impl<'a> Index<'a> {
    fn new(points: &'a [Point]) -> Self {
        let mut map: HashMap<(&str, &str), Vec<&Point>> = HashMap::new();
        for point in points {
            let id = point.labels.iter().find(|(k, _)| k == "id").map_or("", |(_, v)| v.as_str());
            map.entry((point.name.as_str(), id)).or_default().push(point);
        }
        Index(map)
    }

    /// The one point of `name` whose labels include `labels` (the first must be `id`, if any).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let id = labels.iter().find(|(k, _)| *k == "id").map_or("", |(_, v)| *v);
        let candidates = self.0.get(&(name, id))?;
        let matching: Vec<f64> = candidates
            .iter()
            .filter(|p| labels.iter().all(|(k, v)| p.labels.iter().any(|(pk, pv)| pk == k && pv == v)))
            .map(|p| p.value)
            .collect();
        assert!(matching.len() <= 1, "{name} {labels:?} matched {} points", matching.len());
        matching.first().copied()
    }

    fn label(&self, name: &str, id: &str, key: &str) -> Option<&str> {
        let point = self.0.get(&(name, id))?.first()?;
        point.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn collect_fixture(fixture: NodeFixture) -> (tempfile::TempDir, Vec<Point>, Vec<FixtureContainer>) {
    let dir = tempfile::tempdir_in(crate::fixture::scratch_parent()).unwrap();
    fixture.write(dir.path()).unwrap();
    let (points, errors) = ContainerCollector::new(dir.path()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    (dir, points, fixture.containers())
}

fn all_layouts() -> Vec<NodeFixture> {
    let mut fixtures = Vec::new();
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        for driver in [Driver::Systemd, Driver::Cgroupfs] {
            fixtures.push(NodeFixture { version, driver, containers: 100 });
        }
    }
    fixtures
}

#[test]
fn every_layout_reports_every_container_root_and_pod() {
    for fixture in all_layouts() {
        let (_dir, points, containers) = collect_fixture(fixture);
        let index = Index::new(&points);
        every_container_with_its_identity_and_values(fixture, &index, &containers);
        hand_computed_values_of_the_first_pod(&index, &containers);
        pods_and_the_root(fixture, &index, &containers);
    }
}

fn every_container_with_its_identity_and_values(fixture: NodeFixture, index: &Index, containers: &[FixtureContainer]) {
    {
        let context = format!("{:?}/{:?}", fixture.version, fixture.driver);
        let sandboxes = if fixture.driver == Driver::Systemd { 50 } else { 0 };
        assert_eq!(containers.len(), 100 + sandboxes, "{context}");
        for c in containers {
            let id = [("id", c.cgroup.as_str())];
            let cpu = index.value("container_cpu_usage_seconds_total", &[id[0], ("cpu", "total")]);
            assert_eq!(cpu, Some(c.cpu_base_seconds), "{context} {}", c.cgroup);
            let working_set = index.value("container_memory_working_set_bytes", &id);
            assert_eq!(working_set, Some(c.working_set() as f64), "{context} {}", c.cgroup);
            assert_eq!(index.value("container_memory_usage_bytes", &id), Some(c.memory_usage as f64));
            let expected = [("namespace", &c.namespace), ("pod", &c.pod), ("image", &c.image), ("name", &c.id)];
            for (key, want) in expected {
                assert_eq!(index.label("container_memory_rss", &c.cgroup, key), Some(want.as_str()), "{context} {key}");
            }
            let container = index.label("container_memory_rss", &c.cgroup, "container");
            assert_eq!(container, (!c.is_sandbox()).then_some(c.container.as_str()), "{context}");
            let quota = index.value("container_spec_cpu_quota", &id);
            assert_eq!(quota, c.cpu_quota.map(|q| q as f64), "{context} quota of {}", c.cgroup);
            let limit = index.value("container_spec_memory_limit_bytes", &id);
            assert_eq!(limit, Some(c.memory_limit.unwrap_or(0) as f64), "{context} unlimited is 0");
            let reads = index.value("container_fs_reads_bytes_total", &[id[0], ("device", "/dev/sda")]);
            assert_eq!(reads, Some(c.io_bytes.0 as f64), "{context}");
            let writes = index.value("container_fs_writes_bytes_total", &[id[0], ("device", "/dev/sda")]);
            assert_eq!(writes, Some(c.io_bytes.1 as f64), "{context}");
            assert_eq!(index.value("container_processes", &id), Some(1.0));
            let lo = index.value("container_network_receive_bytes_total", &[id[0], ("interface", "lo")]);
            assert_eq!(lo, None, "{context} loopback is skipped");
        }
        assert_eq!(index.value("machine_cpu_cores", &[]), Some(8.0), "{context}");
    }
}

/// pod-000 is guaranteed: its app container is number 1 with 4 MiB × 2 + 4 MiB used, 4 MiB inactive.
fn hand_computed_values_of_the_first_pod(index: &Index, containers: &[FixtureContainer]) {
    {
        let app = containers.iter().find(|c| c.pod == "pod-000" && c.container == "app").unwrap();
        let id = ("id", app.cgroup.as_str());
        assert_eq!(index.value("container_cpu_usage_seconds_total", &[id]), Some(51.0));
        assert_eq!(index.value("container_memory_working_set_bytes", &[id]), Some(8.0 * MIB));
        assert_eq!(index.value("container_memory_rss", &[id]), Some(9.0 * MIB));
        assert_eq!(index.value("container_spec_cpu_quota", &[id]), Some(50_000.0));
        assert_eq!(index.value("container_spec_cpu_period", &[id]), Some(100_000.0));
        assert_eq!(index.value("container_spec_memory_limit_bytes", &[id]), Some(512.0 * MIB));
        assert_eq!(index.value("container_cpu_cfs_throttled_periods_total", &[id]), Some(25.0));
        assert_eq!(index.value("container_cpu_cfs_throttled_seconds_total", &[id]), Some(0.4));
        assert_eq!(index.value("container_cpu_user_seconds_total", &[id]), Some(38.25));
        let eth0 = [id, ("interface", "eth0")];
        assert_eq!(index.value("container_network_receive_bytes_total", &eth0), Some(1000.0));
        assert_eq!(index.value("container_network_transmit_bytes_total", &eth0), Some(2000.0));
        let pgfault = [id, ("failure_type", "pgfault"), ("scope", "container")];
        assert_eq!(index.value("container_memory_failures_total", &pgfault), Some(700.0));
    }
}

fn pods_and_the_root(fixture: NodeFixture, index: &Index, containers: &[FixtureContainer]) {
    {
        let totals = fixture.totals();
        let root = [("id", "/")];
        assert_eq!(index.value("container_cpu_usage_seconds_total", &root), Some(totals.cpu_base_seconds));
        let working_set = (totals.memory_usage - totals.inactive_file) as f64;
        assert_eq!(index.value("container_memory_working_set_bytes", &root), Some(working_set));
        assert_eq!(index.label("container_memory_rss", "/", "pod"), None);
        let first_pod: Vec<&FixtureContainer> = containers.iter().filter(|c| c.pod == "pod-001").collect();
        let pod_cgroup = first_pod[0].pod_cgroup.as_str();
        let pod_working_set: u64 = first_pod.iter().map(|c| c.working_set()).sum();
        let pod_id = [("id", pod_cgroup)];
        assert_eq!(index.value("container_memory_working_set_bytes", &pod_id), Some(pod_working_set as f64));
        assert_eq!(index.label("container_memory_rss", pod_cgroup, "pod"), Some("pod-001"));
        assert_eq!(index.label("container_memory_rss", pod_cgroup, "container"), None);
        assert_eq!(index.label("container_memory_rss", pod_cgroup, "image"), None);
    }
}

#[test]
fn cpu_counters_advance_at_the_fixture_rate() {
    let fixture = NodeFixture { version: CgroupVersion::V2, driver: Driver::Systemd, containers: 4 };
    let dir = tempfile::tempdir_in(crate::fixture::scratch_parent()).unwrap();
    fixture.write(dir.path()).unwrap();
    fixture.advance(dir.path(), 10.0).unwrap();
    let (points, _) = ContainerCollector::new(dir.path()).collect();
    let index = Index::new(&points);
    for c in fixture.containers() {
        let cpu = index.value("container_cpu_usage_seconds_total", &[("id", c.cgroup.as_str())]).unwrap();
        assert!((cpu - (c.cpu_base_seconds + 10.0 * c.cpu_cores)).abs() < 1e-6, "{cpu} for {}", c.cgroup);
    }
}

#[test]
fn a_malformed_file_is_reported_and_the_rest_still_counts() {
    let fixture = NodeFixture { version: CgroupVersion::V1, driver: Driver::Cgroupfs, containers: 10 };
    let dir = tempfile::tempdir_in(crate::fixture::scratch_parent()).unwrap();
    fixture.write(dir.path()).unwrap();
    let broken = &fixture.containers()[0];
    let usage_file = dir.path().join("sys/fs/cgroup/memory").join(&broken.cgroup[1..]).join("memory.usage_in_bytes");
    std::fs::write(&usage_file, "garbage\n").unwrap();
    let (points, errors) = ContainerCollector::new(dir.path()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("memory.usage_in_bytes"), "{}", errors[0]);
    let index = Index::new(&points);
    assert_eq!(index.value("container_memory_working_set_bytes", &[("id", broken.cgroup.as_str())]), None);
    let other = &fixture.containers()[1];
    let expected = other.working_set() as f64;
    assert_eq!(index.value("container_memory_working_set_bytes", &[("id", other.cgroup.as_str())]), Some(expected));
}

#[test]
fn this_machine_reports_sane_root_values() {
    let (points, errors) = ContainerCollector::new(Path::new("/")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let index = Index::new(&points);
    let memory_total = index.value("machine_memory_bytes", &[]).unwrap();
    let working_set = index.value("container_memory_working_set_bytes", &[("id", "/")]).unwrap();
    assert!(working_set > 0.0 && working_set <= memory_total, "{working_set} of {memory_total}");
    let cpu = index.value("container_cpu_usage_seconds_total", &[("id", "/")]).unwrap();
    assert!(cpu > 0.0, "{cpu}");
    assert!(index.value("machine_cpu_cores", &[]).unwrap() >= 1.0);
}

#[test]
fn a_sandbox_whose_runtime_keeps_pod_labels_reports_kube_pod_labels() {
    let fixture = NodeFixture { version: CgroupVersion::V2, driver: Driver::Systemd, containers: 4 };
    let dir = tempfile::tempdir_in(crate::fixture::scratch_parent()).unwrap();
    fixture.write(dir.path()).unwrap();
    // pod-000's sandbox as CRI-O keeps it: the pod's labels in an annotation (containerd keeps none).
    let sandbox = fixture.containers().into_iter().find(|c| c.is_sandbox()).unwrap();
    std::fs::remove_dir_all(
        dir.path().join(format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{}", sandbox.id)),
    )
    .unwrap();
    let crio = dir.path().join(format!("run/containers/storage/overlay-containers/{}/userdata", sandbox.id));
    std::fs::create_dir_all(&crio).unwrap();
    let labels = r#"{"app.kubernetes.io/name":"checkout","io.kubernetes.pod.name":"pod-000"}"#;
    let spec = serde_json::json!({"annotations": {"io.kubernetes.cri-o.ContainerType": "sandbox",
        "io.kubernetes.pod.name": sandbox.pod, "io.kubernetes.pod.namespace": sandbox.namespace,
        "io.kubernetes.cri-o.Labels": labels}});
    std::fs::write(crio.join("config.json"), spec.to_string()).unwrap();

    let (points, errors) = ContainerCollector::new(dir.path()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let pod_labels: Vec<&Point> = points.iter().filter(|p| p.name == "kube_pod_labels").collect();
    assert_eq!(pod_labels.len(), 1, "only the pod whose runtime keeps labels");
    let expected =
        [("namespace", sandbox.namespace.as_str()), ("pod", "pod-000"), ("label_app_kubernetes_io_name", "checkout")];
    let actual: Vec<(&str, &str)> = pod_labels[0].labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(actual, expected);
}
