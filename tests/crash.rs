//! Acknowledged means durable: samples confirmed with 204 survive a SIGKILL under load.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{Vigil, client, remote_write, remote_write_body};
use vigil_tsdb::{Db, DbOptions, Matcher, Queryable};

#[test]
fn sigkill_under_load_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let acknowledged: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            let url_vigil = vigil.addr;
            std::thread::spawn(move || {
                let http = client();
                let target = harness::Target { addr: url_vigil };
                let mut batch = 0i64;
                while !stop.load(Ordering::Relaxed) && batch < 100_000 {
                    // Each batch: 50 series of writer `writer`, one sample each at time `batch`.
                    let t = 1_700_000_000_000 + batch * 1000;
                    let series: Vec<(String, String)> =
                        (0..50).map(|i| (format!("w{writer}"), format!("s{i}"))).collect();
                    let labels: Vec<[(&str, &str); 3]> = series
                        .iter()
                        .map(|(w, s)| [("__name__", "load"), ("writer", w.as_str()), ("series", s.as_str())])
                        .collect();
                    let samples = [(t, batch as f64)];
                    let wire: Vec<harness::WireSeries<'_>> = labels.iter().map(|l| (&l[..], &samples[..])).collect();
                    match target.write(&http, &remote_write_body(&wire)) {
                        Some(204) => acknowledged.lock().unwrap().push(writer * 1_000_000_000 + batch),
                        Some(_) | None => break,
                    }
                    batch += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    vigil.kill();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 20, "the load ran: {} batches acknowledged", acknowledged.len());
    println!("{} batches of 50 samples acknowledged before SIGKILL", acknowledged.len());

    let (db, report) = Db::open(&dir.path().join("metrics"), DbOptions::default()).unwrap();
    assert!(report.corruptions.is_empty(), "{:?}", report.corruptions);
    for writer in 0..2i64 {
        let series = db.select(&[Matcher::equal("writer", format!("w{writer}"))], i64::MIN, i64::MAX).unwrap();
        let wanted: Vec<i64> =
            acknowledged.iter().filter(|id| *id / 1_000_000_000 == writer).map(|id| id % 1_000_000_000).collect();
        for s in &series {
            let stored: std::collections::HashSet<i64> =
                s.samples.iter().map(|p| (p.t - 1_700_000_000_000) / 1000).collect();
            let missing: Vec<&i64> = wanted.iter().filter(|b| !stored.contains(b)).collect();
            assert!(missing.is_empty(), "{}: acknowledged batches missing after SIGKILL: {missing:?}", s.labels);
        }
        if !wanted.is_empty() {
            assert_eq!(series.len(), 50, "writer {writer}: every series of an acknowledged batch exists");
        }
    }
    // And the server itself restarts on the same directory.
    drop(db);
    let restarted = Vigil::server(dir.path(), &[]);
    let body = remote_write_body(&[(&[("__name__", "after")], &[(1_800_000_000_000, 1.0)])]);
    assert_eq!(remote_write(&client(), &restarted, &body, None).0, 204);
}
