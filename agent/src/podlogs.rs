//! Pod logs: the kubelet's `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log` files, in CRI format
//! (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`, `P` lines joined until an `F`) or Docker's JSON format
//! (`{"log": "...\n", "stream": "stdout", "time": "..."}`), followed with [`crate::tail::Tailer`] and
//! encoded as OTLP logs with Kubernetes resource attributes. Optionally, lines that do not match a start
//! pattern join the entry before them (multiline grouping, for stack traces). Each record carries its
//! position (`vigil.log.position`: the file's source key and the entry's first byte offset), by which the
//! server drops a record it already has.

mod protobuf;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use regex::Regex;

use crate::tail::{FileLines, Hold};

/// The OTLP request pod logs ship as.
pub type LogsRequest = ExportLogsServiceRequest;

/// One log entry of a container; its text borrows the lines read where it can (a whole CRI line), and
/// is owned where it was put together (partial lines, multiline groups, Docker's JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Nanoseconds since the epoch.
    pub ts_ns: i64,
    /// `stdout` or `stderr`.
    pub stream: Cow<'a, str>,
    /// The text, partial lines joined.
    pub text: Cow<'a, str>,
    /// The source key of the file it was read from.
    pub source: u64,
    /// The byte offset of its first line in that file.
    pub offset: u64,
}

/// An entry kept between polls (being put together).
pub type Entry = Record<'static>;

/// The OTLP log attribute holding a record's position: `<source key, 16 hex digits>:<offset>`.
pub const POSITION_ATTRIBUTE: &str = "vigil.log.position";

impl Record<'_> {
    /// The value of [`POSITION_ATTRIBUTE`].
    pub fn position(&self) -> String {
        String::from_utf8_lossy(protobuf::Position::of(self).as_bytes()).into_owned()
    }

    /// The record with its strings owned.
    fn into_owned(self) -> Entry {
        Record {
            ts_ns: self.ts_ns,
            stream: Cow::Owned(self.stream.into_owned()),
            text: Cow::Owned(self.text.into_owned()),
            source: self.source,
            offset: self.offset,
        }
    }
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

/// Every pod log file under `root`, with its metadata.
pub fn files(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("var/log/pods")) else { return out };
    for pod in pods.filter_map(Result::ok) {
        let Ok(containers) = std::fs::read_dir(pod.path()) else { continue };
        for container in containers.filter_map(Result::ok) {
            let Ok(logs) = std::fs::read_dir(container.path()) else { continue };
            let logs = logs.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|e| e == "log"));
            out.extend(logs.filter_map(|e| crate::tail::entry_file(&e)));
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

/// Entries begun in one file and not yet complete.
#[derive(Debug, Default)]
struct Open {
    /// A CRI line cut into `P` pieces, waiting for its `F` piece.
    cri_partial: Option<Entry>,
    /// With multiline grouping, the entry that later continuation lines would join.
    group: Option<Entry>,
}

impl Open {
    /// Where the earliest unfinished entry starts.
    fn hold(&self) -> Option<Hold> {
        let earliest = [&self.group, &self.cri_partial].into_iter().flatten().min_by_key(|e| e.offset)?;
        Some(Hold { source: earliest.source, offset: earliest.offset })
    }
}

/// Turns tailed lines into entries: decodes CRI and Docker lines, joins CRI partial lines and, with a
/// start pattern, groups continuation lines into the entry before them. State for unfinished entries is
/// kept per file between polls.
#[derive(Debug, Default)]
pub struct Assembler {
    multiline_start: Option<Regex>,
    open: BTreeMap<PathBuf, Open>,
}

impl Assembler {
    /// An assembler; with `multiline_start`, an entry whose text does not match it joins the entry before
    /// it (with a newline between) instead of starting a record.
    pub fn new(multiline_start: Option<Regex>) -> Self {
        Assembler { multiline_start, open: BTreeMap::new() }
    }

    /// The complete entries of newly tailed lines, grouped by container. A multiline group is complete
    /// when its next start line arrives, or when its file had no new line for a whole poll.
    pub fn entries<'a>(&mut self, batches: &'a [FileLines]) -> BTreeMap<Origin, Vec<Record<'a>>> {
        let mut out: BTreeMap<Origin, Vec<Record<'a>>> = BTreeMap::new();
        let mut idle: Vec<PathBuf> = self.open.keys().cloned().collect();
        for batch in batches {
            let Some(origin) = origin(&batch.path) else { continue };
            idle.retain(|path| *path != batch.path);
            let open = self.open.entry(batch.path.clone()).or_default();
            let sink = out.entry(origin).or_default();
            sink.reserve(batch.len());
            for (offset, line) in batch.lines() {
                let Some(entry) = decode(line, batch.source, offset, &mut open.cri_partial) else { continue };
                match &self.multiline_start {
                    None => sink.push(entry),
                    Some(start) => group(start, &mut open.group, entry, sink),
                }
            }
        }
        for path in idle {
            let Some(origin) = origin(&path) else { continue };
            if let Some(group) = self.open.get_mut(&path).and_then(|open| open.group.take()) {
                out.entry(origin).or_default().push(group);
            }
        }
        self.open.retain(|_, open| open.cri_partial.is_some() || open.group.is_some());
        out.retain(|_, entries| !entries.is_empty());
        out
    }

    /// Where each file's earliest unfinished entry starts: what the tailer may checkpoint up to.
    pub fn holds(&self) -> BTreeMap<PathBuf, Hold> {
        self.open.iter().filter_map(|(path, open)| Some((path.clone(), open.hold()?))).collect()
    }

    /// Forgets unfinished entries (the tailer was rewound to before them).
    pub fn reset(&mut self) {
        self.open.clear();
    }
}

/// Adds `entry` to the open multiline group, or completes that group into `sink` and opens a new one
/// when `entry` matches the start pattern.
fn group<'a>(start: &Regex, open: &mut Option<Entry>, entry: Record<'a>, sink: &mut Vec<Record<'a>>) {
    match open {
        Some(current) if !start.is_match(&entry.text) => {
            let text = current.text.to_mut();
            text.push('\n');
            text.push_str(&entry.text);
        }
        _ => sink.extend(open.replace(entry.into_owned())),
    }
}

/// Decodes one CRI or Docker line at `offset`; `None` for a line that is malformed or that only begins a
/// CRI entry (kept in `partial` until its `F` piece).
fn decode<'a>(line: &'a str, source: u64, offset: u64, partial: &mut Option<Entry>) -> Option<Record<'a>> {
    if line.starts_with('{') {
        return docker_entry(line, source, offset);
    }
    let mut fields = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tag)) = (fields.next(), fields.next(), fields.next()) else { return None };
    let text = fields.next().unwrap_or("");
    let ts_ns = chrono::DateTime::parse_from_rfc3339(time).ok()?.timestamp_nanos_opt()?;
    match partial {
        // A whole line: the common case, borrowed from the lines read.
        None if tag != "P" => {
            Some(Record { ts_ns, stream: Cow::Borrowed(stream), text: Cow::Borrowed(text), source, offset })
        }
        None => {
            let stream = Cow::Owned(stream.to_owned());
            *partial = Some(Record { ts_ns, stream, text: Cow::Owned(text.to_owned()), source, offset });
            None
        }
        Some(entry) => {
            entry.text.to_mut().push_str(text);
            if tag == "P" { None } else { partial.take() }
        }
    }
}

fn docker_entry(line: &str, source: u64, offset: u64) -> Option<Entry> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = value.get("log")?.as_str()?;
    let time = value.get("time")?.as_str()?;
    Some(Record {
        ts_ns: chrono::DateTime::parse_from_rfc3339(time).ok()?.timestamp_nanos_opt()?,
        stream: Cow::Owned(value.get("stream").and_then(|s| s.as_str()).unwrap_or("stdout").to_owned()),
        text: Cow::Owned(text.strip_suffix('\n').unwrap_or(text).to_owned()),
        source,
        offset,
    })
}

/// Encoded requests for the entries of many containers, each holding at most about `max_text_bytes` of
/// text (an entry is never split), so that no request reaches the server's size limit.
pub fn encode_batches(entries: &BTreeMap<Origin, Vec<Record<'_>>>, node: &str, max_text_bytes: usize) -> Vec<Vec<u8>> {
    let mut requests = Vec::new();
    let mut groups: Vec<(&Origin, &[Record<'_>])> = Vec::new();
    let mut size = 0;
    for (origin, records) in entries {
        let mut start = 0;
        for (index, record) in records.iter().enumerate() {
            if size > 0 && size + record.text.len() > max_text_bytes {
                if index > start {
                    groups.push((origin, &records[start..index]));
                }
                requests.push(protobuf::encode_request(&groups, node));
                groups.clear();
                (start, size) = (index, 0);
            }
            size += record.text.len() + RECORD_OVERHEAD;
        }
        if records.len() > start {
            groups.push((origin, &records[start..]));
        }
    }
    if !groups.is_empty() {
        requests.push(protobuf::encode_request(&groups, node));
    }
    requests
}

/// Bytes an encoded record takes besides its text (time, stream, position), about.
const RECORD_OVERHEAD: usize = 64;

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    use super::*;

    const FILE: &str = "/host/var/log/pods/shop_web-0_1234-abcd/nginx/0.log";

    /// One poll's lines of [`FILE`], read at `start`.
    fn batch(start: u64, text: &[&str]) -> Vec<FileLines> {
        let bytes = text.iter().flat_map(|line| format!("{line}\n").into_bytes()).collect();
        vec![FileLines::new(FILE.into(), 7, start, bytes)]
    }

    fn texts(entries: &BTreeMap<Origin, Vec<Record<'_>>>) -> Vec<(String, u64)> {
        entries.values().flatten().map(|e| (e.text.to_string(), e.offset)).collect()
    }

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
    }

    /// The request [`encode_batches`] writes, built from the generated structs: a resource per container
    /// with `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`, `k8s.node.name` and `service.name`
    /// (the container), and `log.iostream` and [`POSITION_ATTRIBUTE`] on each record.
    fn model(entries: &BTreeMap<Origin, Vec<Record<'_>>>, node: &str) -> LogsRequest {
        let resource_logs = entries
            .iter()
            .map(|(origin, records)| ResourceLogs {
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
                    log_records: records
                        .iter()
                        .map(|record| LogRecord {
                            time_unix_nano: record.ts_ns.max(0) as u64,
                            attributes: vec![
                                string("log.iostream", &record.stream),
                                string(POSITION_ATTRIBUTE, &record.position()),
                            ],
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(record.text.to_string())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        LogsRequest { resource_logs }
    }

    #[test]
    fn cri_and_docker_lines_parse_and_partials_join() {
        let mut assembler = Assembler::new(None);
        let first = "2024-05-01T10:00:00.123456789Z stdout F GET /healthz 200";
        let read = batch(0, &[first, "2024-05-01T10:00:01Z stderr P first half, "]);
        let parsed = assembler.entries(&read);
        let entry = &parsed.values().next().unwrap()[0];
        assert_eq!((entry.ts_ns, entry.text.as_ref()), (1_714_557_600_123_456_789, "GET /healthz 200"));
        assert!(matches!(entry.text, Cow::Borrowed(_)), "a whole line is not copied");
        assert_eq!(entry.position(), "0000000000000007:0");
        let partial_at = first.len() as u64 + 1;
        assert_eq!(
            assembler.holds()[Path::new(FILE)],
            Hold { source: 7, offset: partial_at },
            "a P line waits for its F, and the checkpoint waits for it"
        );
        let read = batch(200, &["2024-05-01T10:00:01Z stderr F second half"]);
        let parsed = assembler.entries(&read);
        let entry = &parsed.values().next().unwrap()[0];
        assert_eq!((entry.stream.as_ref(), entry.text.as_ref()), ("stderr", "first half, second half"));
        assert_eq!(entry.offset, partial_at, "a joined line is known by its first piece");
        assert!(assembler.holds().is_empty());
        let read = batch(300, &[r#"{"log":"started\n","stream":"stdout","time":"2024-05-01T10:00:02Z"}"#, "garbage"]);
        let docker = assembler.entries(&read);
        assert_eq!(texts(&docker), [("started".to_owned(), 300)], "malformed lines are skipped");
    }

    #[test]
    fn continuation_lines_join_the_entry_they_follow() {
        let mut assembler = Assembler::new(Some(Regex::new(r"^\S").unwrap()));
        let line = |text: &str| format!("2024-05-01T10:00:00Z stderr F {text}");
        let poll = [line("Exception in main"), line("\tat a.b(C.java:1)"), line("\tat d.e(F.java:2)"), line("next")];
        let read = batch(0, &poll.iter().map(String::as_str).collect::<Vec<_>>());
        let first = assembler.entries(&read);
        assert_eq!(texts(&first), [("Exception in main\n\tat a.b(C.java:1)\n\tat d.e(F.java:2)".to_owned(), 0)]);
        let next_at: u64 = poll[..3].iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(assembler.holds()[Path::new(FILE)].offset, next_at, "the open group holds the checkpoint");
        let read = batch(500, &[&line("  continued")]);
        assert!(assembler.entries(&read).is_empty(), "the group stays open while its file grows");
        let flushed = assembler.entries(&[]);
        assert_eq!(texts(&flushed)[0].0, "next\n  continued", "a poll without new lines completes it");
        assert!(assembler.holds().is_empty());
    }

    fn record(n: i64, text: String) -> Record<'static> {
        let stream = Cow::Borrowed(if n % 2 == 0 { "stdout" } else { "stderr" });
        Record { ts_ns: n, stream, text: Cow::Owned(text), source: 0xfeed_0000 + n as u64, offset: (n * n) as u64 }
    }

    #[test]
    fn requests_are_written_as_prost_writes_them() {
        let containers = [("shop", "web-0", "nginx"), ("shop", "web-0", "sidecar"), ("kube-system", "dns-1", "dns")];
        let mut entries = BTreeMap::new();
        for (index, (namespace, pod, container)) in containers.into_iter().enumerate() {
            let origin = Origin { namespace: namespace.into(), pod: pod.into(), container: container.into() };
            // Times of zero (not written), texts empty and over 127 bytes (two-byte lengths), offsets of many digits.
            let records = (0..40).map(|n| record(n * index as i64, "é".repeat((n * 7) as usize))).collect();
            entries.insert(origin, records);
        }
        let written = encode_batches(&entries, "node-a", usize::MAX);
        assert_eq!(written, [model(&entries, "node-a").encode_to_vec()]);
    }

    #[test]
    fn large_polls_ship_as_several_requests_in_order() {
        let origin = origin(Path::new(FILE)).unwrap();
        let records: Vec<Record<'_>> = (0..100).map(|n| record(n, format!("{n:0100}"))).collect();
        let entries = BTreeMap::from([(origin, records)]);
        let requests = encode_batches(&entries, "node-a", 1000);
        assert!(requests.len() >= 10, "{} requests", requests.len());
        let times: Vec<u64> = requests
            .iter()
            .flat_map(|bytes| LogsRequest::decode(bytes.as_slice()).unwrap().resource_logs)
            .flat_map(|resource| resource.scope_logs)
            .flat_map(|scope| scope.log_records)
            .map(|record| record.time_unix_nano)
            .collect();
        assert_eq!(times, (0..100).collect::<Vec<u64>>(), "every record, in order");
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
