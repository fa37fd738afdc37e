//! `vigil up` keeps its own log events in its log store, as stream `{service_name="vigil", job="vigil"}`
//! with logfmt lines (`level=info target=vigil::server msg="..." key=value`): a tracing layer hands events
//! to a bounded channel (dropping, and counting, what does not fit) and a task appends them every second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use vigil_tsdb::logs::{LogRecord, LogStore};

/// Events waiting to be stored, at most.
const QUEUE: usize = 10_000;

static SINK: OnceLock<SyncSender<LogRecord>> = OnceLock::new();

/// The tracing layer; events are dropped until [`keep`] has started.
pub struct OwnLogsLayer;

/// Formats an event's fields as logfmt.
#[derive(Default)]
struct Logfmt {
    message: String,
    fields: String,
}

impl Visit for Logfmt {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
            return;
        }
        let _ = write!(self.fields, " {}={}", field.name(), quoted(&text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
            return;
        }
        let _ = write!(self.fields, " {}={}", field.name(), quoted(value));
    }
}

fn quoted(text: &str) -> String {
    if !text.is_empty() && !text.contains([' ', '"', '=']) {
        return text.to_owned();
    }
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl<S: Subscriber> Layer<S> for OwnLogsLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        let mut line = Logfmt::default();
        event.record(&mut line);
        let metadata = event.metadata();
        let text = format!(
            "level={} target={} msg={}{}",
            metadata.level().as_str().to_ascii_lowercase(),
            metadata.target(),
            quoted(&line.message),
            line.fields
        );
        let record = LogRecord {
            ts_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            labels: BTreeMap::from([("job".into(), "vigil".into()), ("service_name".into(), "vigil".into())]),
            line: text,
            metadata: BTreeMap::new(),
            position: None,
        };
        if let Err(TrySendError::Full(_)) = sink.try_send(record) {
            metrics::counter!("vigil_own_log_events_dropped_total").increment(1);
        }
    }
}

/// Starts keeping own log events in `store` until `stop`.
pub fn keep(store: Arc<dyn LogStore>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let (sender, receiver) = sync_channel(QUEUE);
    let _ = SINK.set(sender);
    let receiver = Arc::new(std::sync::Mutex::new(receiver));
    tokio::spawn(drain(store, receiver, stop))
}

async fn drain(
    store: Arc<dyn LogStore>,
    receiver: Arc<std::sync::Mutex<Receiver<LogRecord>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = stop.changed() => true,
        };
        let (store, receiver) = (store.clone(), receiver.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let records: Vec<LogRecord> = receiver.lock().expect("receiver lock").try_iter().collect();
            store.append(&records)
        })
        .await;
        if let Ok(Err(error)) = stored {
            // Not logged: that would feed this very queue.
            eprintln!("storing vigil's own logs failed: {error}");
        }
        if stopping || *stop.borrow() {
            return;
        }
    }
}
