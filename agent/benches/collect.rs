//! One collection over a 100-container fixture node (cgroup v1 and v2), and its OTLP encoding: the agent's
//! per-interval CPU cost. At a 10 s interval, the time per collection divided by 10 s is the share of a core.

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_agent::cgroup::ContainerCollector;
use vigil_agent::fixture::{CgroupVersion, Driver, NodeFixture, scratch_parent};
use vigil_agent::ship::{self, JobPoints};

fn collect(c: &mut Criterion) {
    for (version, label) in [(CgroupVersion::V1, "v1"), (CgroupVersion::V2, "v2")] {
        let fixture = NodeFixture { version, driver: Driver::Systemd, containers: 100 };
        let root = tempfile::tempdir_in(scratch_parent()).unwrap();
        fixture.write(root.path()).unwrap();
        let mut collector = ContainerCollector::new(root.path());
        c.bench_function(&format!("collect_100_containers_{label}"), |b| b.iter(|| collector.collect()));
        c.bench_function(&format!("collect_and_encode_100_containers_{label}"), |b| {
            b.iter(|| {
                let (points, _) = collector.collect();
                let (host, _) = vigil_agent::host::collect(root.path());
                let jobs = [
                    JobPoints { job: "cadvisor".into(), instance: None, points },
                    JobPoints { job: "node".into(), instance: None, points: host },
                ];
                prost::Message::encode_to_vec(&ship::encode(&jobs, "node-a", 1))
            })
        });
    }
}

criterion_group!(benches, collect);
criterion_main!(benches);
