//! Container metrics with cAdvisor's names, units and labels, read from cgroup v1 or v2 under a root directory.
//!
//! Reported cgroups: the root (`id="/"`, the whole node) and every cgroup under the top-level `kubepods*`
//! directories (QoS classes, pods, containers). Pods and containers get `namespace`, `pod`, `container`,
//! `image` and `name` from [`crate::runtime`].

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::runtime::{self, CgroupKind, PodDirectory, Resolver};
use crate::{AgentError, Point};

/// Kernel clock ticks per second (`USER_HZ`) for `cpuacct.stat`.
const USER_HZ: f64 = 100.0;
/// Memory limits above this mean "unlimited" and are exported as 0, as cAdvisor does.
const UNLIMITED_MEMORY: f64 = (1u64 << 62) as f64;
/// How deep under `kubepods` the walk goes (kubepods/qos/pod/container is 4).
const MAX_DEPTH: usize = 5;

/// Where the cgroup controllers are mounted.
#[derive(Debug, Clone)]
enum Layout {
    /// One unified tree (its root has `cgroup.controllers`).
    V2(PathBuf),
    /// One tree per controller.
    V1 { cpu: PathBuf, cpuacct: PathBuf, memory: PathBuf, blkio: PathBuf, pids: PathBuf },
}

impl Layout {
    fn detect(root: &Path) -> Option<Layout> {
        let base = root.join("sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            return Some(Layout::V2(base));
        }
        let pick = |names: &[&str]| names.iter().map(|name| base.join(name)).find(|dir| dir.is_dir());
        let memory = pick(&["memory"])?;
        let cpuacct = pick(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"])?;
        let cpu = pick(&["cpu", "cpu,cpuacct", "cpuacct,cpu"]).unwrap_or_else(|| cpuacct.clone());
        let blkio = pick(&["blkio"]).unwrap_or_else(|| base.join("blkio"));
        let pids = pick(&["pids"]).unwrap_or_else(|| base.join("pids"));
        Some(Layout::V1 { cpu, cpuacct, memory, blkio, pids })
    }

    /// The tree whose directories list the cgroups.
    fn reference(&self) -> &Path {
        match self {
            Layout::V2(base) => base,
            Layout::V1 { memory, .. } => memory,
        }
    }
}

/// Reads container metrics each time [`ContainerCollector::collect`] is called, caching container metadata.
#[derive(Debug)]
pub struct ContainerCollector {
    root: PathBuf,
    resolver: Resolver,
}

impl ContainerCollector {
    /// A collector over the node files under `root`.
    pub fn new(root: &Path) -> Self {
        ContainerCollector { root: root.to_owned(), resolver: Resolver::new(root) }
    }

    /// One pass over every reported cgroup, plus `machine_cpu_cores` and `machine_memory_bytes`.
    /// Unreadable or malformed files are reported; everything else still counts.
    pub fn collect(&mut self) -> (Vec<Point>, Vec<AgentError>) {
        let mut out = Output::default();
        let meminfo = read_key_values(&self.root.join("proc/meminfo"), &mut out.errors);
        machine_points(&self.root, &meminfo, &mut out);
        let Some(layout) = Layout::detect(&self.root) else {
            out.errors.push(AgentError::Format {
                path: self.root.join("sys/fs/cgroup"),
                reason: "no cgroup v2 tree and no v1 memory hierarchy".into(),
            });
            return (out.points, out.errors);
        };
        let pods = PodDirectory::read(&self.root);
        let devices = block_devices(&self.root);
        let mut live_containers = HashSet::new();
        for cgroup in list_cgroups(layout.reference()) {
            let kind = runtime::classify(&cgroup);
            if let CgroupKind::Container { id, .. } = &kind {
                live_containers.insert(id.clone());
            }
            let identity = self.resolver.identity(&kind, &pods).unwrap_or_default();
            push_pod_labels(&identity, &mut out.points);
            out.labels = vec![("id".to_owned(), cgroup.clone())];
            for (name, value) in [
                ("name", identity.name),
                ("image", identity.image),
                ("pod", identity.pod),
                ("namespace", identity.namespace),
                ("container", identity.container),
            ] {
                if !value.is_empty() {
                    out.labels.push((name.to_owned(), value));
                }
            }
            let reader = CgroupReader { root: &self.root, layout: &layout, cgroup: &cgroup, devices: &devices };
            reader.read(&kind, &meminfo, &mut out);
        }
        self.resolver.retain(&live_containers);
        (out.points, out.errors)
    }
}

/// `kube_pod_labels{namespace, pod, label_<name>}` = 1, kube-state-metrics' shape, for a sandbox whose pod's
/// labels the runtime keeps: what label selectors on pods (`kubectl top pods -l`) match against.
fn push_pod_labels(identity: &runtime::Identity, points: &mut Vec<Point>) {
    if identity.pod_labels.is_empty() {
        return;
    }
    let mut labels =
        vec![("namespace".to_owned(), identity.namespace.clone()), ("pod".to_owned(), identity.pod.clone())];
    labels.extend(identity.pod_labels.iter().map(|(key, value)| (pod_label_name(key), value.clone())));
    points.push(Point { name: "kube_pod_labels".to_owned(), labels, value: 1.0 });
}

/// A Kubernetes label key as a Prometheus label name: `label_` and the key with every character outside
/// `[a-zA-Z0-9_]` turned into `_` (`app.kubernetes.io/name` → `label_app_kubernetes_io_name`).
pub fn pod_label_name(key: &str) -> String {
    let sanitized: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("label_{sanitized}")
}

/// Points and errors of one pass, with the labels of the cgroup being read.
#[derive(Default)]
struct Output {
    points: Vec<Point>,
    errors: Vec<AgentError>,
    labels: Vec<(String, String)>,
}

impl Output {
    fn push(&mut self, name: &str, extra: &[(&str, &str)], value: f64) {
        let mut labels = self.labels.clone();
        labels.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.points.push(Point { name: name.to_owned(), labels, value });
    }
}

fn machine_points(root: &Path, meminfo: &HashMap<String, f64>, out: &mut Output) {
    if let Ok(cpuinfo) = std::fs::read_to_string(root.join("proc/cpuinfo")) {
        let cores = cpuinfo.lines().filter(|line| line.starts_with("processor")).count();
        out.push("machine_cpu_cores", &[], cores as f64);
    }
    if let Some(total_kib) = meminfo.get("MemTotal") {
        out.push("machine_memory_bytes", &[], total_kib * 1024.0);
    }
}

/// `/` and every directory under the top-level `kubepods*` directories, as cgroup paths.
fn list_cgroups(reference: &Path) -> Vec<String> {
    let mut cgroups = vec!["/".to_owned()];
    let mut pending: Vec<(PathBuf, String, usize)> = subdirectories(reference)
        .into_iter()
        .filter(|name| name.starts_with("kubepods"))
        .map(|name| (reference.join(&name), format!("/{name}"), 1))
        .collect();
    while let Some((dir, cgroup, depth)) = pending.pop() {
        if depth < MAX_DEPTH {
            for child in subdirectories(&dir) {
                pending.push((dir.join(&child), format!("{cgroup}/{child}"), depth + 1));
            }
        }
        cgroups.push(cgroup);
    }
    cgroups.sort();
    cgroups
}

fn subdirectories(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_type().ok()?.is_dir().then(|| entry.file_name().into_string().ok())?
        })
        .collect()
}

/// `major:minor` → `/dev/<name>` from `/proc/diskstats`, for the `device` label.
fn block_devices(root: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(root.join("proc/diskstats")) else { return HashMap::new() };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor, name) = (fields.next()?, fields.next()?, fields.next()?);
            Some((format!("{major}:{minor}"), format!("/dev/{name}")))
        })
        .collect()
}

/// Reads one cgroup's files.
struct CgroupReader<'a> {
    root: &'a Path,
    layout: &'a Layout,
    cgroup: &'a str,
    devices: &'a HashMap<String, String>,
}

impl CgroupReader<'_> {
    fn dir(&self, hierarchy: &Path) -> PathBuf {
        hierarchy.join(self.cgroup.trim_start_matches('/'))
    }

    fn read(&self, kind: &CgroupKind, meminfo: &HashMap<String, f64>, out: &mut Output) {
        let reference = self.dir(self.layout.reference());
        if let Ok(meta) = std::fs::metadata(&reference) {
            out.push("container_start_time_seconds", &[], meta.ctime() as f64);
        }
        match self.layout {
            Layout::V2(base) => self.read_v2(&self.dir(base), kind, meminfo, out),
            Layout::V1 { cpu, cpuacct, memory, blkio, pids } => {
                self.read_v1_cpu(&self.dir(cpu), &self.dir(cpuacct), out);
                self.read_v1_memory(&self.dir(memory), out);
                self.read_v1_blkio(&self.dir(blkio), out);
                if let Some(max) = read_limit(&self.dir(pids).join("pids.max"), out) {
                    out.push("container_threads_max", &[], max);
                }
                let tasks = &self.dir(cpuacct).join("tasks");
                self.read_processes(&reference.join("cgroup.procs"), tasks, kind, out);
            }
        }
    }

    fn read_v1_cpu(&self, cpu: &Path, cpuacct: &Path, out: &mut Output) {
        if let Some(ns) = read_number(&cpuacct.join("cpuacct.usage"), out) {
            out.push("container_cpu_usage_seconds_total", &[("cpu", "total")], ns / 1e9);
        }
        let stat = read_key_values(&cpuacct.join("cpuacct.stat"), &mut out.errors);
        for (key, name) in
            [("user", "container_cpu_user_seconds_total"), ("system", "container_cpu_system_seconds_total")]
        {
            if let Some(ticks) = stat.get(key) {
                out.push(name, &[], ticks / USER_HZ);
            }
        }
        if let Some(period) = read_number(&cpu.join("cpu.cfs_period_us"), out) {
            out.push("container_spec_cpu_period", &[], period);
        }
        if let Some(shares) = read_number(&cpu.join("cpu.shares"), out) {
            out.push("container_spec_cpu_shares", &[], shares);
        }
        let quota = read_number(&cpu.join("cpu.cfs_quota_us"), out).filter(|quota| *quota > 0.0);
        if let Some(quota) = quota {
            out.push("container_spec_cpu_quota", &[], quota);
            let throttling = read_key_values(&cpu.join("cpu.stat"), &mut out.errors);
            push_throttling(&throttling, "throttled_time", 1e9, out);
        }
    }

    fn read_v1_memory(&self, dir: &Path, out: &mut Output) {
        let Some(usage) = read_number(&dir.join("memory.usage_in_bytes"), out) else { return };
        let stat = read_key_values(&dir.join("memory.stat"), &mut out.errors);
        // Hierarchical `total_*` keys when accounting is hierarchical, else the plain ones.
        let get = |key: &str| stat.get(&format!("total_{key}")).or_else(|| stat.get(key)).copied();
        push_memory_usage(usage, get("inactive_file"), out);
        if let Some(max) = read_number(&dir.join("memory.max_usage_in_bytes"), out) {
            out.push("container_memory_max_usage_bytes", &[], max);
        }
        for (key, name) in [
            ("rss", "container_memory_rss"),
            ("cache", "container_memory_cache"),
            ("mapped_file", "container_memory_mapped_file"),
        ] {
            out.push(name, &[], get(key).unwrap_or(0.0));
        }
        let swap = read_number(&dir.join("memory.memsw.usage_in_bytes"), out).map(|memsw| (memsw - usage).max(0.0));
        out.push("container_memory_swap", &[], swap.or_else(|| get("swap")).unwrap_or(0.0));
        let failcnt = read_number(&dir.join("memory.failcnt"), out).unwrap_or(0.0);
        out.push("container_memory_failcnt", &[], failcnt);
        for kind in ["pgfault", "pgmajfault"] {
            let container = stat.get(kind).copied().unwrap_or(0.0);
            let hierarchy = stat.get(&format!("total_{kind}")).copied().unwrap_or(container);
            out.push("container_memory_failures_total", &[("failure_type", kind), ("scope", "container")], container);
            out.push("container_memory_failures_total", &[("failure_type", kind), ("scope", "hierarchy")], hierarchy);
        }
        if let Some(kernel) = read_number(&dir.join("memory.kmem.usage_in_bytes"), out) {
            out.push("container_memory_kernel_usage", &[], kernel);
        }
        for (file, name) in [
            ("memory.limit_in_bytes", "container_spec_memory_limit_bytes"),
            ("memory.soft_limit_in_bytes", "container_spec_memory_reservation_limit_bytes"),
            ("memory.memsw.limit_in_bytes", "container_spec_memory_swap_limit_bytes"),
        ] {
            if let Some(limit) = read_limit(&dir.join(file), out) {
                out.push(name, &[], limit);
            }
        }
    }

    /// `blkio.io_service_bytes_recursive` and `io_serviced_recursive`, or their `throttle.` twins when the
    /// proportional-weight policy is off (then the plain files are empty).
    fn read_v1_blkio(&self, dir: &Path, out: &mut Output) {
        let families = [
            ("io_service_bytes_recursive", "container_fs_reads_bytes_total", "container_fs_writes_bytes_total"),
            ("io_serviced_recursive", "container_fs_reads_total", "container_fs_writes_total"),
        ];
        for (file, reads, writes) in families {
            let plain = std::fs::read_to_string(dir.join(format!("blkio.{file}"))).unwrap_or_default();
            let text = if plain.lines().any(|line| line.split_whitespace().count() == 3) {
                plain
            } else {
                std::fs::read_to_string(dir.join(format!("blkio.throttle.{file}"))).unwrap_or_default()
            };
            let mut per_device: HashMap<&str, (f64, f64)> = HashMap::new();
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [device, operation, raw] = fields[..] else { continue };
                let Ok(value) = raw.parse::<f64>() else { continue };
                let entry = per_device.entry(device).or_default();
                match operation {
                    "Read" => entry.0 += value,
                    "Write" => entry.1 += value,
                    _ => {}
                }
            }
            self.push_device_io(per_device, reads, writes, out);
        }
    }

    fn push_device_io(&self, per_device: HashMap<&str, (f64, f64)>, reads: &str, writes: &str, out: &mut Output) {
        for (device, (read, written)) in per_device {
            let name = self.devices.get(device).map_or(device, String::as_str);
            out.push(reads, &[("device", name)], read);
            out.push(writes, &[("device", name)], written);
        }
    }

    fn read_v2(&self, dir: &Path, kind: &CgroupKind, meminfo: &HashMap<String, f64>, out: &mut Output) {
        let cpu = read_key_values(&dir.join("cpu.stat"), &mut out.errors);
        for (key, name) in [
            ("usage_usec", "container_cpu_usage_seconds_total"),
            ("user_usec", "container_cpu_user_seconds_total"),
            ("system_usec", "container_cpu_system_seconds_total"),
        ] {
            let extra: &[(&str, &str)] = if key == "usage_usec" { &[("cpu", "total")] } else { &[] };
            if let Some(usec) = cpu.get(key) {
                out.push(name, extra, usec / 1e6);
            }
        }
        self.read_v2_cpu_spec(dir, &cpu, out);
        self.read_v2_memory(dir, kind, meminfo, out);
        self.read_v2_io(dir, out);
        for (file, resource) in [("cpu.pressure", "cpu"), ("memory.pressure", "memory"), ("io.pressure", "io")] {
            read_pressure(&dir.join(file), resource, out);
        }
        if let Some(max) = read_limit(&dir.join("pids.max"), out) {
            out.push("container_threads_max", &[], max);
        }
        self.read_processes(&dir.join("cgroup.procs"), &dir.join("cgroup.threads"), kind, out);
    }

    fn read_v2_cpu_spec(&self, dir: &Path, cpu: &HashMap<String, f64>, out: &mut Output) {
        if let Some(weight) = read_number(&dir.join("cpu.weight"), out) {
            out.push("container_spec_cpu_shares", &[], (2.0 + (weight - 1.0) * 262142.0 / 9999.0).floor());
        }
        let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) else { return };
        let mut fields = max.split_whitespace();
        let (quota, period) = (fields.next(), fields.next().and_then(|raw| raw.parse::<f64>().ok()));
        if let Some(period) = period {
            out.push("container_spec_cpu_period", &[], period);
        }
        if let Some(quota) = quota.and_then(|raw| raw.parse::<f64>().ok()) {
            out.push("container_spec_cpu_quota", &[], quota);
            push_throttling(cpu, "throttled_usec", 1e6, out);
        }
    }

    fn read_v2_memory(&self, dir: &Path, kind: &CgroupKind, meminfo: &HashMap<String, f64>, out: &mut Output) {
        // The v2 root has no memory.current: the node's usage is MemTotal - MemFree.
        let usage = match kind {
            CgroupKind::Root => {
                meminfo.get("MemTotal").zip(meminfo.get("MemFree")).map(|(total, free)| (total - free) * 1024.0)
            }
            _ => read_number(&dir.join("memory.current"), out),
        };
        let Some(usage) = usage else { return };
        let stat = read_key_values(&dir.join("memory.stat"), &mut out.errors);
        push_memory_usage(usage, stat.get("inactive_file").copied(), out);
        let peak = read_number(&dir.join("memory.peak"), out).unwrap_or(0.0);
        out.push("container_memory_max_usage_bytes", &[], peak);
        for (key, name) in [
            ("anon", "container_memory_rss"),
            ("file", "container_memory_cache"),
            ("file_mapped", "container_memory_mapped_file"),
        ] {
            out.push(name, &[], stat.get(key).copied().unwrap_or(0.0));
        }
        let swap = read_number(&dir.join("memory.swap.current"), out).unwrap_or(0.0);
        out.push("container_memory_swap", &[], swap);
        out.push("container_memory_failcnt", &[], 0.0);
        for failure in ["pgfault", "pgmajfault"] {
            let value = stat.get(failure).copied().unwrap_or(0.0);
            for scope in ["container", "hierarchy"] {
                out.push("container_memory_failures_total", &[("failure_type", failure), ("scope", scope)], value);
            }
        }
        if let Some(kernel) = stat.get("kernel") {
            out.push("container_memory_kernel_usage", &[], *kernel);
        }
        let events = read_key_values(&dir.join("memory.events"), &mut out.errors);
        if let Some(kills) = events.get("oom_kill") {
            out.push("container_oom_events_total", &[], *kills);
        }
        for (file, name) in [
            ("memory.max", "container_spec_memory_limit_bytes"),
            ("memory.min", "container_spec_memory_reservation_limit_bytes"),
            ("memory.swap.max", "container_spec_memory_swap_limit_bytes"),
        ] {
            if let Some(limit) = read_limit(&dir.join(file), out) {
                out.push(name, &[], limit);
            }
        }
    }

    /// `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… …`.
    fn read_v2_io(&self, dir: &Path, out: &mut Output) {
        let Ok(text) = std::fs::read_to_string(dir.join("io.stat")) else { return };
        let mut bytes = HashMap::new();
        let mut operations = HashMap::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(device) = fields.next() else { continue };
            let values: HashMap<&str, f64> = fields
                .filter_map(|pair| pair.split_once('='))
                .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                .collect();
            let value = |key: &str| values.get(key).copied().unwrap_or(0.0);
            bytes.insert(device, (value("rbytes"), value("wbytes")));
            operations.insert(device, (value("rios"), value("wios")));
        }
        self.push_device_io(bytes, "container_fs_reads_bytes_total", "container_fs_writes_bytes_total", out);
        self.push_device_io(operations, "container_fs_reads_total", "container_fs_writes_total", out);
    }

    /// Process and thread counts, and network counters of the container's network namespace (read through
    /// its first process; the root reads the node's own `/proc/net/dev`).
    fn read_processes(&self, procs: &Path, threads: &Path, kind: &CgroupKind, out: &mut Output) {
        let pids: Vec<String> = std::fs::read_to_string(procs)
            .map(|text| text.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        out.push("container_processes", &[], pids.len() as f64);
        if let Ok(text) = std::fs::read_to_string(threads) {
            out.push("container_threads", &[], text.split_whitespace().count() as f64);
        }
        let net_dev = match kind {
            CgroupKind::Root => self.root.join("proc/net/dev"),
            CgroupKind::Container { .. } => match pids.first() {
                Some(pid) => self.root.join(format!("proc/{pid}/net/dev")),
                None => return,
            },
            _ => return,
        };
        let Ok(text) = std::fs::read_to_string(&net_dev) else { return };
        for (interface, counters) in crate::host::net_dev_rows(&text) {
            let skipped = ["lo", "veth", "docker", "nerdctl"].iter().any(|prefix| interface.starts_with(prefix));
            if skipped || counters.len() < 12 {
                continue;
            }
            let extra = [("interface", interface)];
            for (index, name) in [
                (0, "container_network_receive_bytes_total"),
                (1, "container_network_receive_packets_total"),
                (2, "container_network_receive_errors_total"),
                (3, "container_network_receive_packets_dropped_total"),
                (8, "container_network_transmit_bytes_total"),
                (9, "container_network_transmit_packets_total"),
                (10, "container_network_transmit_errors_total"),
                (11, "container_network_transmit_packets_dropped_total"),
            ] {
                out.push(name, &extra, counters[index]);
            }
        }
    }
}

/// Usage and working set (usage minus inactive file pages, floored at 0).
fn push_memory_usage(usage: f64, inactive_file: Option<f64>, out: &mut Output) {
    out.push("container_memory_usage_bytes", &[], usage);
    let working_set = match inactive_file {
        Some(inactive) if inactive > usage => 0.0,
        Some(inactive) => usage - inactive,
        None => usage,
    };
    out.push("container_memory_working_set_bytes", &[], working_set);
}

/// CFS throttling counters (only exported with a quota).
fn push_throttling(stat: &HashMap<String, f64>, throttled_key: &str, per_second: f64, out: &mut Output) {
    for (key, name) in [
        ("nr_periods", "container_cpu_cfs_periods_total"),
        ("nr_throttled", "container_cpu_cfs_throttled_periods_total"),
    ] {
        if let Some(value) = stat.get(key) {
            out.push(name, &[], *value);
        }
    }
    if let Some(value) = stat.get(throttled_key) {
        out.push("container_cpu_cfs_throttled_seconds_total", &[], value / per_second);
    }
}

/// PSI files: `some … total=<µs>` (waiting) and `full … total=<µs>` (stalled).
fn read_pressure(path: &Path, resource: &str, out: &mut Output) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = match fields.next() {
            Some("some") => "waiting",
            Some("full") => "stalled",
            _ => continue,
        };
        let total = fields.find_map(|field| field.strip_prefix("total=")).and_then(|raw| raw.parse::<f64>().ok());
        if let Some(usec) = total {
            out.push(&format!("container_pressure_{resource}_{kind}_seconds_total"), &[], usec / 1e6);
        }
    }
}

/// A single-number file; `None` when absent, an error (and `None`) when malformed.
fn read_number(path: &Path, out: &mut Output) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let raw = text.trim();
    match raw.parse() {
        Ok(value) => Some(value),
        Err(_) => {
            let reason = format!("expected a number, found {raw:?}");
            out.errors.push(AgentError::Format { path: path.to_owned(), reason });
            None
        }
    }
}

/// A limit file: `max` and values above 2^62 mean unlimited, exported as 0.
fn read_limit(path: &Path, out: &mut Output) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.trim() == "max" {
        return Some(0.0);
    }
    read_number(path, out).map(|limit| if limit >= UNLIMITED_MEMORY { 0.0 } else { limit })
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `/proc/meminfo` with its `:` and `kB`).
fn read_key_values(path: &Path, errors: &mut Vec<AgentError>) -> HashMap<String, f64> {
    let Ok(text) = std::fs::read_to_string(path) else { return HashMap::new() };
    let mut values = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(raw)) = (fields.next(), fields.next()) else { continue };
        match raw.parse() {
            Ok(value) => {
                values.insert(key.trim_end_matches(':').to_owned(), value);
            }
            Err(_) => errors
                .push(AgentError::Format { path: path.to_owned(), reason: format!("bad value {raw:?} for {key}") }),
        }
    }
    values
}

#[cfg(test)]
mod tests;
