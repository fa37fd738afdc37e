//! Vigil's node agent: reads the node's own files (under a configurable root) and turns them into points.
//!
//! The agent knows nothing about storage: it produces [`Point`]s, and its caller stores them or ships them
//! with [`ship`] (OTLP/gRPC through a disk buffer).

pub mod cgroup;
pub mod discovery;
mod error;
pub mod exposition;
pub mod filesystem;
pub mod fixture;
pub mod host;
pub mod kubernetes;
pub mod podlogs;
pub mod relabel;
pub mod runtime;
pub mod scrape;
pub mod ship;
pub mod tail;
mod wire;

pub use error::AgentError;

/// Bit pattern of Prometheus's staleness marker: a [`Point`] with this value says its series ended.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// One metric value read from the node, with Prometheus naming.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Metric name (`node_load1`).
    pub name: String,
    /// Labels other than the name, in any order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Point {
    fn new(name: impl Into<String>, labels: &[(&str, &str)], value: f64) -> Self {
        Point {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            value,
        }
    }
}
