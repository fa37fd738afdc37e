//! Host metrics with node-exporter's names, read from `/proc` under a root directory.

use std::path::{Path, PathBuf};

use crate::{AgentError, Point};

/// Kernel clock ticks per second (`USER_HZ`), 100 on every mainstream Linux architecture.
const USER_HZ: f64 = 100.0;

/// CPU time columns of `/proc/stat`, in order, with node-exporter's mode names.
const CPU_MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

/// Parses one `/proc` file's text (the path is for error messages).
type Parser = fn(&str, &Path) -> Result<Vec<Point>, AgentError>;

/// Reads host metrics from the `/proc` under `root`. Each file that fails is reported; the others still count.
pub fn collect(root: &Path) -> (Vec<Point>, Vec<AgentError>) {
    let proc_dir = root.join("proc");
    let mut points = Vec::new();
    let mut errors = Vec::new();
    let readers: [(&str, Parser); 5] = [
        ("stat", parse_stat),
        ("meminfo", parse_meminfo),
        ("loadavg", parse_loadavg),
        ("net/dev", parse_net_dev),
        ("diskstats", parse_diskstats),
    ];
    for (file, parse) in readers {
        let path = proc_dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text, &path) {
                Ok(parsed) => points.extend(parsed),
                Err(error) => errors.push(error),
            },
            Err(source) => errors.push(AgentError::Read { path, source }),
        }
    }
    points.extend(crate::filesystem::collect(root));
    (points, errors)
}

fn format_error(path: &Path, reason: impl Into<String>) -> AgentError {
    AgentError::Format { path: PathBuf::from(path), reason: reason.into() }
}

/// `/proc/stat`: per-CPU time by mode, boot time, context switches, forks.
fn parse_stat(text: &str, path: &Path) -> Result<Vec<Point>, AgentError> {
    let mut points = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(cpu) = key.strip_prefix("cpu").filter(|id| !id.is_empty()) {
            for (mode, raw) in CPU_MODES.iter().zip(fields) {
                let ticks: f64 =
                    raw.parse().map_err(|_| format_error(path, format!("bad {mode} time {raw:?} for cpu{cpu}")))?;
                points.push(Point::new("node_cpu_seconds_total", &[("cpu", cpu), ("mode", mode)], ticks / USER_HZ));
            }
            continue;
        }
        let name = match key {
            "btime" => "node_boot_time_seconds",
            "ctxt" => "node_context_switches_total",
            "processes" => "node_forks_total",
            "procs_running" => "node_procs_running",
            "procs_blocked" => "node_procs_blocked",
            _ => continue,
        };
        let raw = fields.next().ok_or_else(|| format_error(path, format!("{key} has no value")))?;
        let value: f64 = raw.parse().map_err(|_| format_error(path, format!("bad {key} value {raw:?}")))?;
        points.push(Point::new(name, &[], value));
    }
    if !points.iter().any(|p| p.name == "node_cpu_seconds_total") {
        return Err(format_error(path, "no per-cpu lines"));
    }
    Ok(points)
}

/// `/proc/meminfo`: every field as `node_memory_<Field>_bytes` (parentheses become `_`, as node-exporter does).
fn parse_meminfo(text: &str, path: &Path) -> Result<Vec<Point>, AgentError> {
    let mut points = Vec::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let raw = parts.next().ok_or_else(|| format_error(path, format!("{key} has no value")))?;
        let mut value: f64 = raw.parse().map_err(|_| format_error(path, format!("bad {key} value {raw:?}")))?;
        let name = match parts.next() {
            Some("kB") => {
                value *= 1024.0;
                format!("node_memory_{}_bytes", key.replace('(', "_").replace(')', ""))
            }
            _ => format!("node_memory_{}", key.replace('(', "_").replace(')', "")),
        };
        points.push(Point::new(name, &[], value));
    }
    if points.is_empty() {
        return Err(format_error(path, "no fields"));
    }
    Ok(points)
}

/// `/proc/net/dev` columns, in order, with node-exporter's names (`node_network_<name>_total`).
const NET_COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// `/proc/net/dev`: per-interface counters.
fn parse_net_dev(text: &str, path: &Path) -> Result<Vec<Point>, AgentError> {
    let mut points = Vec::new();
    for (device, values) in net_dev_rows(text) {
        if values.len() < NET_COLUMNS.len() {
            return Err(format_error(path, format!("{device} has {} numeric columns, expected 16", values.len())));
        }
        for (column, value) in NET_COLUMNS.iter().zip(values) {
            points.push(Point::new(format!("node_network_{column}_total"), &[("device", device)], value));
        }
    }
    Ok(points)
}

/// The interface rows of a `/proc/net/dev` text with their leading numeric columns (stopping at the first
/// field that is not a number).
pub(crate) fn net_dev_rows(text: &str) -> Vec<(&str, Vec<f64>)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (device, counters) = line.split_once(':')?;
            let values = counters.split_whitespace().map_while(|raw| raw.parse().ok()).collect();
            Some((device.trim(), values))
        })
        .collect()
}

/// Whole disks only, as node-exporter's default device filter: no partitions, loop or ram devices.
fn is_whole_disk(device: &str) -> bool {
    if ["loop", "ram", "zram", "fd"].iter().any(|prefix| device.starts_with(prefix)) {
        return false;
    }
    // sda1, vdb2, xvda1: a letter-named disk followed by a partition number.
    let numbered_partition = ["sd", "hd", "vd", "xvd"].iter().any(|prefix| {
        device.strip_prefix(prefix).is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.ends_with(|c: char| c.is_ascii_digit())
        })
    });
    // nvme0n1p1: a namespace followed by `p` and a partition number.
    let nvme_partition = device.starts_with("nvme")
        && device.rsplit_once('p').is_some_and(|(head, number)| head.contains('n') && number.parse::<u32>().is_ok());
    !(numbered_partition || nvme_partition)
}

/// `/proc/diskstats`: per-disk I/O counters (sectors are 512 bytes, times in milliseconds).
fn parse_diskstats(text: &str, path: &Path) -> Result<Vec<Point>, AgentError> {
    let mut points = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 14 {
            continue;
        }
        let device = fields[2];
        if !is_whole_disk(device) {
            continue;
        }
        let number = |index: usize| -> Result<f64, AgentError> {
            let raw = fields[index];
            raw.parse().map_err(|_| format_error(path, format!("bad field {index} {raw:?} for {device}")))
        };
        let series = [
            ("node_disk_reads_completed_total", number(3)?),
            ("node_disk_reads_merged_total", number(4)?),
            ("node_disk_read_bytes_total", number(5)? * 512.0),
            ("node_disk_read_time_seconds_total", number(6)? / 1000.0),
            ("node_disk_writes_completed_total", number(7)?),
            ("node_disk_writes_merged_total", number(8)?),
            ("node_disk_written_bytes_total", number(9)? * 512.0),
            ("node_disk_write_time_seconds_total", number(10)? / 1000.0),
            ("node_disk_io_now", number(11)?),
            ("node_disk_io_time_seconds_total", number(12)? / 1000.0),
            ("node_disk_io_time_weighted_seconds_total", number(13)? / 1000.0),
        ];
        for (name, value) in series {
            points.push(Point::new(name, &[("device", device)], value));
        }
    }
    Ok(points)
}

/// `/proc/loadavg`: `node_load1`, `node_load5`, `node_load15`.
fn parse_loadavg(text: &str, path: &Path) -> Result<Vec<Point>, AgentError> {
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() < 3 {
        return Err(format_error(path, "fewer than three load averages"));
    }
    let mut points = Vec::new();
    for (name, raw) in ["node_load1", "node_load5", "node_load15"].iter().zip(fields) {
        let value: f64 = raw.parse().map_err(|_| format_error(path, format!("bad load average {raw:?}")))?;
        points.push(Point::new(*name, &[], value));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn value(points: &[Point], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        points
            .iter()
            .find(|p| p.name == name && labels.iter().all(|(k, v)| p.labels.iter().any(|(pk, pv)| pk == k && pv == v)))
            .map(|p| p.value)
    }

    #[test]
    fn fixture_proc_gives_node_exporter_series() {
        let (points, errors) = collect(&fixture_root());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(value(&points, "node_cpu_seconds_total", &[("cpu", "1"), ("mode", "idle")]), Some(4321.0));
        assert_eq!(value(&points, "node_cpu_seconds_total", &[("cpu", "0"), ("mode", "steal")]), Some(0.07));
        assert_eq!(points.iter().filter(|p| p.name == "node_cpu_seconds_total").count(), 16);
        assert_eq!(value(&points, "node_memory_MemTotal_bytes", &[]), Some(16_384_000.0 * 1024.0));
        assert_eq!(value(&points, "node_memory_Active_anon_bytes", &[]), Some(1024.0 * 1024.0));
        assert_eq!(value(&points, "node_memory_HugePages_Total", &[]), Some(0.0));
        assert_eq!(value(&points, "node_load15", &[]), Some(0.25));
        assert_eq!(value(&points, "node_boot_time_seconds", &[]), Some(1_700_000_000.0));
        assert_eq!(value(&points, "node_network_receive_bytes_total", &[("device", "eth0")]), Some(123456789.0));
        assert_eq!(value(&points, "node_network_transmit_packets_total", &[("device", "lo")]), Some(42.0));
        assert_eq!(value(&points, "node_disk_read_bytes_total", &[("device", "sda")]), Some(2048.0 * 512.0));
        assert_eq!(value(&points, "node_disk_io_time_seconds_total", &[("device", "nvme0n1")]), Some(1.5));
        assert_eq!(
            value(&points, "node_disk_reads_completed_total", &[("device", "sda1")]),
            None,
            "partitions are skipped"
        );
        assert_eq!(value(&points, "node_disk_reads_completed_total", &[("device", "loop0")]), None);
    }

    #[test]
    fn whole_disks_only() {
        for disk in ["sda", "vdb", "xvda", "nvme0n1", "dm-0", "md0"] {
            assert!(is_whole_disk(disk), "{disk}");
        }
        for partition in ["sda1", "vdb2", "nvme0n1p1", "loop3", "ram0", "zram0"] {
            assert!(!is_whole_disk(partition), "{partition}");
        }
    }

    #[test]
    fn missing_and_malformed_files_are_reported_per_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/loadavg"), "0.1 oops\n").unwrap();
        let (points, errors) = collect(dir.path());
        assert!(points.is_empty());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(messages[2].contains("fewer than three load averages"), "{messages:?}");
    }

    #[test]
    fn this_machine_reports_sane_values() {
        let (points, errors) = collect(Path::new("/"));
        assert!(errors.is_empty(), "{errors:?}");
        let total = value(&points, "node_memory_MemTotal_bytes", &[]).unwrap();
        let available = value(&points, "node_memory_MemAvailable_bytes", &[]).unwrap();
        assert!(total > 64.0 * 1024.0 * 1024.0 && available <= total, "{available} of {total}");
        assert!(value(&points, "node_cpu_seconds_total", &[("cpu", "0"), ("mode", "idle")]).unwrap() > 0.0);
    }
}
