//! Pod logs: the kubelet's `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log` files, in CRI format
//! (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`, `P` lines joined until an `F`) or Docker's JSON format
//! (`{"log": "...\n", "stream": "stdout", "time": "..."}`), followed with [`crate::tail::Tailer`] and
//! encoded as OTLP logs with Kubernetes resource attributes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::tail::FileLines;

/// The OTLP request pod logs ship as.
pub type LogsRequest = ExportLogsServiceRequest;

/// One log entry of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Nanoseconds since the epoch.
    pub ts_ns: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text, partial lines joined.
    pub text: String,
}

/// Who wrote a pod log file, from its path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

/// Every pod log file under `root`.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("var/log/pods")) else { return out };
    for pod in pods.filter_map(Result::ok) {
        let Ok(containers) = std::fs::read_dir(pod.path()) else { continue };
        for container in containers.filter_map(Result::ok) {
            let Ok(logs) = std::fs::read_dir(container.path()) else { continue };
            out.extend(
                logs.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "log")),
            );
        }
    }
    out
}

/// The origin of `.../<namespace>_<pod>_<uid>/<container>/<n>.log`.
pub fn origin(path: &Path) -> Option<Origin> {
    let container = path.parent()?;
    let pod_dir = container.parent()?.file_name()?.to_str()?;
    let mut parts = pod_dir.splitn(3, '_');
    let (namespace, pod) = (parts.next()?, parts.next()?);
    Some(Origin {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.file_name()?.to_str()?.to_owned(),
    })
}

/// Parses one file's new lines. `partial` carries a CRI line cut into `P` pieces across polls.
pub fn parse(lines: &[String], partial: &mut Option<Entry>) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in lines {
        if line.starts_with('{') {
            if let Some(entry) = docker_entry(line) {
                out.push(entry);
            }
            continue;
        }
        let mut fields = line.splitn(4, ' ');
        let (Some(time), Some(stream), Some(tag)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let text = fields.next().unwrap_or("");
        let Some(ts_ns) = chrono::DateTime::parse_from_rfc3339(time).ok().and_then(|t| t.timestamp_nanos_opt()) else {
            continue;
        };
        let entry = partial.get_or_insert_with(|| Entry { ts_ns, stream: stream.to_owned(), text: String::new() });
        entry.text.push_str(text);
        if tag != "P" {
            out.extend(partial.take());
        }
    }
    out
}

fn docker_entry(line: &str) -> Option<Entry> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = value.get("log")?.as_str()?;
    let time = value.get("time")?.as_str()?;
    Some(Entry {
        ts_ns: chrono::DateTime::parse_from_rfc3339(time).ok()?.timestamp_nanos_opt()?,
        stream: value.get("stream").and_then(|s| s.as_str()).unwrap_or("stdout").to_owned(),
        text: text.strip_suffix('\n').unwrap_or(text).to_owned(),
    })
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

/// One OTLP request for the entries of many containers: a resource per container with
/// `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`, `k8s.node.name` and `service.name` (the
/// container), and `log.iostream` on each record.
pub fn encode(entries: &BTreeMap<Origin, Vec<Entry>>, node: &str) -> ExportLogsServiceRequest {
    let resource_logs = entries
        .iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(origin, entries)| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", &origin.container),
                    string("k8s.namespace.name", &origin.namespace),
                    string("k8s.pod.name", &origin.pod),
                    string("k8s.container.name", &origin.container),
                    string("k8s.node.name", node),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: entries
                    .iter()
                    .map(|entry| LogRecord {
                        time_unix_nano: entry.ts_ns.max(0) as u64,
                        body: Some(AnyValue { value: Some(any_value::Value::StringValue(entry.text.clone())) }),
                        attributes: vec![string("log.iostream", &entry.stream)],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

/// Groups tailed files' lines by container and parses them; `partials` holds cut CRI lines per file.
pub fn entries(batches: Vec<FileLines>, partials: &mut BTreeMap<PathBuf, Entry>) -> BTreeMap<Origin, Vec<Entry>> {
    let mut out: BTreeMap<Origin, Vec<Entry>> = BTreeMap::new();
    for batch in batches {
        let Some(origin) = origin(&batch.path) else { continue };
        let mut partial = partials.remove(&batch.path);
        let parsed = parse(&batch.lines, &mut partial);
        if let Some(partial) = partial {
            partials.insert(batch.path.clone(), partial);
        }
        out.entry(origin).or_default().extend(parsed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cri_and_docker_lines_parse_and_partials_join() {
        let mut partial = None;
        let parsed = parse(
            &lines(&[
                "2024-05-01T10:00:00.123456789Z stdout F GET /healthz 200",
                "2024-05-01T10:00:01Z stderr P first half, ",
            ]),
            &mut partial,
        );
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].ts_ns, 1_714_557_600_123_456_789);
        assert_eq!(parsed[0].text, "GET /healthz 200");
        assert!(partial.is_some(), "a P line waits for its F");
        let parsed = parse(&lines(&["2024-05-01T10:00:01Z stderr F second half"]), &mut partial);
        assert_eq!((parsed[0].stream.as_str(), parsed[0].text.as_str()), ("stderr", "first half, second half"));
        let docker =
            parse(&lines(&[r#"{"log":"started\n","stream":"stdout","time":"2024-05-01T10:00:02Z"}"#]), &mut partial);
        assert_eq!(docker[0].text, "started");
        assert!(parse(&lines(&["garbage"]), &mut partial).is_empty());
    }

    #[test]
    fn origins_come_from_the_kubelet_path() {
        let path = Path::new("/host/var/log/pods/shop_web-0_1234-abcd/nginx/0.log");
        let origin = origin(path).unwrap();
        assert_eq!(
            (origin.namespace.as_str(), origin.pod.as_str(), origin.container.as_str()),
            ("shop", "web-0", "nginx")
        );
    }
}
