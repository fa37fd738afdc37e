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
    let readers: [(&str, Parser); 3] = [("stat", parse_stat), ("meminfo", parse_meminfo), ("loadavg", parse_loadavg)];
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
    }

    #[test]
    fn missing_and_malformed_files_are_reported_per_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/loadavg"), "0.1 oops\n").unwrap();
        let (points, errors) = collect(dir.path());
        assert!(points.is_empty());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
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
