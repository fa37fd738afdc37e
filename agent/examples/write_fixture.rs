//! Writes a synthetic node tree for trying `vigil agent --root DIR` by hand or measuring its overhead.
//!
//! usage: write_fixture DIR [CONTAINERS] [v1|v2] [systemd|cgroupfs]

use vigil_agent::fixture::{CgroupVersion, Driver, NodeFixture};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: write_fixture DIR [CONTAINERS] [v1|v2] [systemd|cgroupfs]");
        std::process::exit(2);
    };
    let containers = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100);
    let version = if args.get(3).map(String::as_str) == Some("v1") { CgroupVersion::V1 } else { CgroupVersion::V2 };
    let driver = if args.get(4).map(String::as_str) == Some("cgroupfs") { Driver::Cgroupfs } else { Driver::Systemd };
    let fixture = NodeFixture { version, driver, containers };
    if let Err(error) = fixture.write(std::path::Path::new(dir)) {
        eprintln!("cannot write the fixture: {error}");
        std::process::exit(1);
    }
    println!("wrote {} containers ({version:?}, {driver:?}) under {dir}", fixture.containers().len());
}
