//! Synthetic node trees (cgroups, `/proc`, runtime state, pod log directories) for tests and benchmarks.
//!
//! A [`NodeFixture`] writes what a Kubernetes node shows the agent, with known values, so the collector's
//! output can be checked number by number. CPU counters advance with [`NodeFixture::advance`] at a fixed rate
//! per container, so rates computed from two collections are known too.

use std::io;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;
const NAMESPACES: [&str; 5] = ["default", "shop", "kube-system", "monitoring", "batch"];
/// v1's "no limit" value.
const V1_UNLIMITED: &str = "9223372036854771712";

/// Which cgroup interface the tree shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One tree per controller under `/sys/fs/cgroup/<controller>`.
    V1,
    /// One unified tree under `/sys/fs/cgroup`.
    V2,
}

/// How the kubelet names pod and container cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `kubepods.slice/…/cri-containerd-<id>.scope`, with containerd's runtime state (sandboxes included).
    Systemd,
    /// `kubepods/<qos>/pod<uid>/<id>`, with Docker's container configs.
    Cgroupfs,
}

/// One node's worth of pods and containers.
#[derive(Debug, Clone, Copy)]
pub struct NodeFixture {
    /// cgroup interface.
    pub version: CgroupVersion,
    /// cgroup naming.
    pub driver: Driver,
    /// Application containers, two per pod.
    pub containers: usize,
}

/// A container of the fixture with the values it reports.
#[derive(Debug, Clone)]
pub struct FixtureContainer {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub pod_uid: String,
    /// Container name; empty for a sandbox.
    pub container: String,
    /// Image reference.
    pub image: String,
    /// 64-hex container id.
    pub id: String,
    /// The pod's cgroup path.
    pub pod_cgroup: String,
    /// The container's cgroup path.
    pub cgroup: String,
    /// CPU used, in cores (the counter's rate).
    pub cpu_cores: f64,
    /// CPU seconds at `elapsed = 0`.
    pub cpu_base_seconds: f64,
    /// Memory usage in bytes.
    pub memory_usage: u64,
    /// Inactive file pages in bytes (usage minus this is the working set).
    pub inactive_file: u64,
    /// A CPU quota in µs per 100 ms period (guaranteed pods only).
    pub cpu_quota: Option<u64>,
    /// A memory limit in bytes (guaranteed pods only).
    pub memory_limit: Option<u64>,
    /// Bytes read and written on `/dev/sda` (8:0).
    pub io_bytes: (u64, u64),
    /// The container's process id (its network counters are those of `/proc/<pid>/net/dev`).
    pub pid: u32,
}

impl FixtureContainer {
    /// `container_memory_working_set_bytes`.
    pub fn working_set(&self) -> u64 {
        self.memory_usage - self.inactive_file
    }

    /// The CPU counter after `elapsed` seconds.
    pub fn cpu_seconds(&self, elapsed: f64) -> f64 {
        self.cpu_base_seconds + self.cpu_cores * elapsed
    }

    /// True for a pod's sandbox (pause) container.
    pub fn is_sandbox(&self) -> bool {
        self.container.is_empty()
    }
}

/// The node-wide (root cgroup) figures of a fixture.
#[derive(Debug, Clone, Copy)]
pub struct NodeTotals {
    /// Cores used by everything on the node.
    pub cpu_cores: f64,
    /// CPU seconds at `elapsed = 0`.
    pub cpu_base_seconds: f64,
    /// Memory in use (v1 `memory.usage_in_bytes`; v2 MemTotal - MemFree).
    pub memory_usage: u64,
    /// Inactive file pages of the root.
    pub inactive_file: u64,
    /// MemTotal.
    pub memory_total: u64,
    /// Processors in `/proc/cpuinfo`.
    pub cpu_count: usize,
}

impl NodeFixture {
    /// Every container, sandboxes included (systemd driver only, as containerd reports them).
    pub fn containers(&self) -> Vec<FixtureContainer> {
        let pods = self.containers.div_ceil(2);
        let mut out = Vec::new();
        for pod in 0..pods {
            let uid = format!("{pod:08x}-0000-4000-8000-{:012x}", pod * 7919);
            let namespace = NAMESPACES[pod % NAMESPACES.len()].to_owned();
            let guaranteed = pod % 3 == 0;
            let pod_cgroup = self.pod_cgroup(pod, &uid);
            let mut members: Vec<(String, String, u64)> = Vec::new();
            if self.driver == Driver::Systemd {
                members.push((String::new(), "registry.k8s.io/pause:3.10".into(), 0xfff000 + pod as u64));
            }
            for slot in 0..2 {
                let index = pod * 2 + slot;
                if index >= self.containers {
                    break;
                }
                let (name, image) =
                    if slot == 0 { ("app", "ghcr.io/acme/app:1.4") } else { ("sidecar", "envoyproxy/envoy:v1.31") };
                members.push((name.into(), image.into(), index as u64 + 1));
            }
            for (container, image, number) in members {
                let id = format!("{number:064x}");
                let sandbox = container.is_empty();
                let n = number % 1000;
                out.push(FixtureContainer {
                    namespace: namespace.clone(),
                    pod: format!("pod-{pod:03}"),
                    pod_uid: uid.clone(),
                    cgroup: format!("{pod_cgroup}/{}", self.container_leaf(&id)),
                    pod_cgroup: pod_cgroup.clone(),
                    container,
                    image,
                    id,
                    cpu_cores: if sandbox { 0.001 } else { 0.010 * ((n % 7) + 1) as f64 },
                    cpu_base_seconds: 50.0 + n as f64,
                    memory_usage: if sandbox { MIB } else { ((n % 16) + 1) * 4 * MIB + 4 * MIB },
                    inactive_file: if sandbox { 0 } else { 4 * MIB },
                    cpu_quota: (guaranteed && !sandbox).then_some(50_000),
                    memory_limit: (guaranteed && !sandbox).then_some(512 * MIB),
                    io_bytes: (4096 * (n + 1), 8192 * (n + 1)),
                    pid: 10_000 + number as u32,
                });
            }
        }
        out
    }

    /// Node totals: all containers plus system overhead.
    pub fn totals(&self) -> NodeTotals {
        let containers = self.containers();
        NodeTotals {
            cpu_cores: containers.iter().map(|c| c.cpu_cores).sum::<f64>() + 0.25,
            cpu_base_seconds: 100_000.0,
            memory_usage: containers.iter().map(|c| c.memory_usage).sum::<u64>() + 1024 * MIB,
            inactive_file: 256 * MIB + containers.iter().map(|c| c.inactive_file).sum::<u64>(),
            memory_total: 16 * 1024 * MIB,
            cpu_count: 8,
        }
    }

    fn pod_cgroup(&self, pod: usize, uid: &str) -> String {
        let qos = ["", "burstable", "besteffort"][pod % 3];
        match (self.driver, qos) {
            (Driver::Systemd, "") => format!("/kubepods.slice/kubepods-pod{}.slice", uid.replace('-', "_")),
            (Driver::Systemd, qos) => {
                format!("/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice", uid.replace('-', "_"))
            }
            (Driver::Cgroupfs, "") => format!("/kubepods/pod{uid}"),
            (Driver::Cgroupfs, qos) => format!("/kubepods/{qos}/pod{uid}"),
        }
    }

    fn container_leaf(&self, id: &str) -> String {
        match self.driver {
            Driver::Systemd => format!("cri-containerd-{id}.scope"),
            Driver::Cgroupfs => id.to_owned(),
        }
    }

    /// Writes the whole tree under `root` with counters at `elapsed = 0`.
    pub fn write(&self, root: &Path) -> io::Result<()> {
        let containers = self.containers();
        let totals = self.totals();
        self.write_proc(root, &totals)?;
        for container in &containers {
            self.write_container(root, container)?;
            self.write_metadata(root, container)?;
        }
        let pods = containers.chunk_by(|a, b| a.pod_uid == b.pod_uid);
        for members in pods {
            let usage = members.iter().map(|c| c.memory_usage).sum();
            let inactive = members.iter().map(|c| c.inactive_file).sum();
            self.write_memory(root, &members[0].pod_cgroup, usage, inactive, None)?;
            self.write_cgroup_common(root, &members[0].pod_cgroup, None, None)?;
        }
        match self.version {
            CgroupVersion::V2 => write(&root.join("sys/fs/cgroup/cgroup.controllers"), "cpu io memory pids\n")?,
            CgroupVersion::V1 => {
                let memory = totals.memory_usage;
                self.write_memory(root, "/", memory, totals.inactive_file, None)?;
            }
        }
        self.write_cgroup_common(root, "/", None, None)?;
        if self.version == CgroupVersion::V2 {
            let stat = format!("anon {}\nfile 0\ninactive_file {}\n", totals.memory_usage, totals.inactive_file);
            write(&self.dir(root, "memory", "/").join("memory.stat"), &stat)?;
        }
        self.advance(root, 0.0)
    }

    /// Rewrites every CPU counter as it reads `elapsed` seconds after the first write.
    pub fn advance(&self, root: &Path, elapsed: f64) -> io::Result<()> {
        let containers = self.containers();
        for container in &containers {
            self.write_cpu(root, &container.cgroup, container.cpu_seconds(elapsed))?;
        }
        for members in containers.chunk_by(|a, b| a.pod_uid == b.pod_uid) {
            let seconds = members.iter().map(|c| c.cpu_seconds(elapsed)).sum();
            self.write_cpu(root, &members[0].pod_cgroup, seconds)?;
        }
        let totals = self.totals();
        self.write_cpu(root, "/", totals.cpu_base_seconds + totals.cpu_cores * elapsed)
    }

    /// The directory of `cgroup` in the hierarchy of `controller` (v1) or the unified tree (v2).
    fn dir(&self, root: &Path, controller: &str, cgroup: &str) -> PathBuf {
        let base = root.join("sys/fs/cgroup");
        let base = match self.version {
            CgroupVersion::V2 => base,
            CgroupVersion::V1 => base.join(controller),
        };
        base.join(cgroup.trim_start_matches('/'))
    }

    fn write_cpu(&self, root: &Path, cgroup: &str, seconds: f64) -> io::Result<()> {
        let user_share = 0.75;
        match self.version {
            CgroupVersion::V1 => {
                let dir = self.dir(root, "cpuacct", cgroup);
                write(&dir.join("cpuacct.usage"), &format!("{}\n", (seconds * 1e9).round() as u64))?;
                let (user, system) = (seconds * user_share * 100.0, seconds * (1.0 - user_share) * 100.0);
                write(&dir.join("cpuacct.stat"), &format!("user {}\nsystem {}\n", user as u64, system as u64))
            }
            CgroupVersion::V2 => {
                let usec = (seconds * 1e6).round() as u64;
                let user = (usec as f64 * user_share) as u64;
                let stat = format!(
                    "usage_usec {usec}\nuser_usec {user}\nsystem_usec {}\nnr_periods 1000\nnr_throttled 25\nthrottled_usec 400000\n",
                    usec - user
                );
                write(&self.dir(root, "cpu", cgroup).join("cpu.stat"), &stat)
            }
        }
    }

    fn write_memory(&self, root: &Path, cgroup: &str, usage: u64, inactive: u64, limit: Option<u64>) -> io::Result<()> {
        let dir = self.dir(root, "memory", cgroup);
        let rss = usage * 3 / 4;
        match self.version {
            CgroupVersion::V1 => {
                let stat = format!(
                    "rss {rss}\ncache {}\nmapped_file 4096\ninactive_file {inactive}\npgfault 700\npgmajfault 3\n\
                     total_rss {rss}\ntotal_cache {}\ntotal_mapped_file 4096\ntotal_inactive_file {inactive}\n\
                     total_pgfault 900\ntotal_pgmajfault 5\n",
                    usage - rss,
                    usage - rss
                );
                write(&dir.join("memory.stat"), &stat)?;
                write(&dir.join("memory.usage_in_bytes"), &format!("{usage}\n"))?;
                write(&dir.join("memory.max_usage_in_bytes"), &format!("{}\n", usage + MIB))?;
                write(&dir.join("memory.failcnt"), "0\n")?;
                let limit = limit.map_or(V1_UNLIMITED.to_owned(), |l| l.to_string());
                write(&dir.join("memory.limit_in_bytes"), &format!("{limit}\n"))
            }
            CgroupVersion::V2 if cgroup == "/" => Ok(()),
            CgroupVersion::V2 => {
                let stat = format!(
                    "anon {rss}\nfile {}\nfile_mapped 4096\ninactive_file {inactive}\npgfault 700\npgmajfault 3\n",
                    usage - rss
                );
                write(&dir.join("memory.stat"), &stat)?;
                write(&dir.join("memory.current"), &format!("{usage}\n"))?;
                write(&dir.join("memory.peak"), &format!("{}\n", usage + MIB))?;
                write(&dir.join("memory.swap.current"), "0\n")?;
                write(&dir.join("memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")?;
                let limit = limit.map_or("max".to_owned(), |l| l.to_string());
                write(&dir.join("memory.max"), &format!("{limit}\n"))
            }
        }
    }

    /// CPU limits, block I/O, processes; `pid` puts one process into the cgroup.
    fn write_cgroup_common(
        &self,
        root: &Path,
        cgroup: &str,
        quota: Option<u64>,
        io: Option<((u64, u64), u32)>,
    ) -> io::Result<()> {
        let procs = io.map_or(String::new(), |(_, pid)| format!("{pid}\n"));
        let (read, written) = io.map_or((0, 0), |(bytes, _)| bytes);
        match self.version {
            CgroupVersion::V1 => {
                let cpu = self.dir(root, "cpu", cgroup);
                write(&cpu.join("cpu.cfs_period_us"), "100000\n")?;
                write(&cpu.join("cpu.cfs_quota_us"), &format!("{}\n", quota.map_or(-1, |q| q as i64)))?;
                write(&cpu.join("cpu.shares"), "1024\n")?;
                write(&cpu.join("cpu.stat"), "nr_periods 1000\nnr_throttled 25\nthrottled_time 400000000\n")?;
                let blkio = self.dir(root, "blkio", cgroup);
                write(&blkio.join("blkio.io_service_bytes_recursive"), "Total 0\n")?;
                let bytes = format!(
                    "8:0 Read {read}\n8:0 Write {written}\n8:0 Sync 0\n8:0 Total {}\nTotal {}\n",
                    read + written,
                    read + written
                );
                write(&blkio.join("blkio.throttle.io_service_bytes_recursive"), &bytes)?;
                write(&self.dir(root, "pids", cgroup).join("pids.max"), "max\n")?;
                write(&self.dir(root, "memory", cgroup).join("cgroup.procs"), &procs)?;
                write(&self.dir(root, "cpuacct", cgroup).join("tasks"), &procs)
            }
            CgroupVersion::V2 => {
                let dir = self.dir(root, "cpu", cgroup);
                write(&dir.join("cpu.max"), &format!("{} 100000\n", quota.map_or("max".into(), |q| q.to_string())))?;
                write(&dir.join("cpu.weight"), "100\n")?;
                write(
                    &dir.join("io.stat"),
                    &format!("8:0 rbytes={read} wbytes={written} rios=10 wios=20 dbytes=0 dios=0\n"),
                )?;
                write(&dir.join("pids.max"), "max\n")?;
                write(&dir.join("cgroup.procs"), &procs)?;
                write(&dir.join("cgroup.threads"), &procs)?;
                write(
                    &dir.join("memory.pressure"),
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
                )
            }
        }
    }

    fn write_container(&self, root: &Path, container: &FixtureContainer) -> io::Result<()> {
        let (usage, inactive) = (container.memory_usage, container.inactive_file);
        self.write_memory(root, &container.cgroup, usage, inactive, container.memory_limit)?;
        let io = Some((container.io_bytes, container.pid));
        self.write_cgroup_common(root, &container.cgroup, container.cpu_quota, io)?;
        let pod_number = u64::from_str_radix(&container.pod_uid[..8], 16).unwrap_or(0) + 1;
        let net_dev = net_dev_text(&[("lo", 5, 5), ("eth0", 1000 * pod_number, 2000 * pod_number)]);
        write(&root.join(format!("proc/{}/net/dev", container.pid)), &net_dev)
    }

    /// Runtime state naming the container, and the kubelet's log directory and link.
    fn write_metadata(&self, root: &Path, container: &FixtureContainer) -> io::Result<()> {
        let pod_dir = format!("var/log/pods/{}_{}_{}", container.namespace, container.pod, container.pod_uid);
        std::fs::create_dir_all(root.join(&pod_dir))?;
        if !container.is_sandbox() {
            let log = format!("{pod_dir}/{}/0.log", container.container);
            write(&root.join(&log), "")?;
            let link = format!(
                "var/log/containers/{}_{}_{}-{}.log",
                container.pod, container.namespace, container.container, container.id
            );
            write(&root.join(link), "")?;
        }
        match self.driver {
            Driver::Systemd => {
                let kind = if container.is_sandbox() { "sandbox" } else { "container" };
                let spec = serde_json::json!({"ociVersion": "1.1.0", "annotations": {
                    "io.kubernetes.cri.container-type": kind,
                    "io.kubernetes.cri.container-name": container.container,
                    "io.kubernetes.cri.sandbox-name": container.pod,
                    "io.kubernetes.cri.sandbox-namespace": container.namespace,
                    "io.kubernetes.cri.sandbox-uid": container.pod_uid,
                    "io.kubernetes.cri.image-name": container.image}});
                let path = format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{}/config.json", container.id);
                write(&root.join(path), &spec.to_string())
            }
            Driver::Cgroupfs => {
                let config = serde_json::json!({"ID": container.id, "Config": {"Image": container.image, "Labels": {
                    "io.kubernetes.container.name": container.container,
                    "io.kubernetes.pod.name": container.pod,
                    "io.kubernetes.pod.namespace": container.namespace,
                    "io.kubernetes.pod.uid": container.pod_uid}}});
                let path = format!("var/lib/docker/containers/{}/config.v2.json", container.id);
                write(&root.join(path), &config.to_string())
            }
        }
    }

    fn write_proc(&self, root: &Path, totals: &NodeTotals) -> io::Result<()> {
        let cpuinfo: String =
            (0..totals.cpu_count).map(|n| format!("processor\t: {n}\nmodel name\t: Fixture CPU\n\n")).collect();
        write(&root.join("proc/cpuinfo"), &cpuinfo)?;
        let total_kib = totals.memory_total / 1024;
        let free_kib = (totals.memory_total - totals.memory_usage) / 1024;
        let meminfo =
            format!("MemTotal:       {total_kib} kB\nMemFree:        {free_kib} kB\nMemAvailable:   {free_kib} kB\n");
        write(&root.join("proc/meminfo"), &meminfo)?;
        write(&root.join("proc/diskstats"), "   8       0 sda 100 0 2048 10 50 0 4096 20 0 30 30 0 0 0 0\n")?;
        write(
            &root.join("proc/net/dev"),
            &net_dev_text(&[("lo", 100, 100), ("eth0", 5_000_000, 7_000_000), ("veth1a2b", 1, 1)]),
        )?;
        let stat: String = (0..totals.cpu_count).map(|n| format!("cpu{n} 100 0 50 1000 5 0 1 0 0 0\n")).collect();
        write(&root.join("proc/stat"), &format!("cpu 800 0 400 8000 40 0 8 0 0 0\n{stat}btime 1700000000\n"))?;
        write(&root.join("proc/loadavg"), "0.50 0.40 0.30 2/300 12345\n")
    }
}

/// A `/proc/net/dev` text with the given receive and transmit byte counts.
fn net_dev_text(interfaces: &[(&str, u64, u64)]) -> String {
    let mut text = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    for (name, received, sent) in interfaces {
        text.push_str(&format!("{name:>6}: {received} 10 0 1 0 0 0 0 {sent} 20 0 2 0 0 0 0\n"));
    }
    text
}

/// Where to put fixture trees: `/dev/shm` when it is there (creating thousands of small files on a journaled
/// disk takes seconds), else the system's temporary directory.
pub fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = shm.metadata().is_ok_and(|meta| meta.is_dir() && !meta.permissions().readonly());
    if writable { shm.to_owned() } else { std::env::temp_dir() }
}

fn write(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)
}
