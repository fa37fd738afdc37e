//! The OpenMetrics parser corpus: every good case parses, every bad case is rejected.

use std::path::Path;

use vigil_agent::exposition::{Format, parse};

#[test]
fn openmetrics_parser_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/openmetrics/parsers");
    assert!(
        dir.is_dir(),
        "OpenMetrics corpus not found at {}: the shared folder must sit beside the checkout",
        dir.display()
    );
    let mut cases: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    let (mut good_passed, mut good_total, mut bad_passed, mut bad_total) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(case.join("test.json")).unwrap()).unwrap();
        let should_parse = spec["shouldParse"].as_bool().unwrap();
        let bytes = std::fs::read(case.join(spec["file"].as_str().unwrap())).unwrap();
        let outcome = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(text, Format::OpenMetrics).map_err(|e| e.to_string()));
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if should_parse {
            good_total += 1;
            match outcome {
                Ok(_) => good_passed += 1,
                Err(error) => failures.push(format!("{name}: should parse, got {error}")),
            }
        } else {
            bad_total += 1;
            match outcome {
                Err(_) => bad_passed += 1,
                Ok(_) => failures.push(format!("{name}: should be rejected")),
            }
        }
    }
    println!(
        "OpenMetrics corpus: good cases parsed {good_passed}/{good_total}, bad cases rejected {bad_passed}/{bad_total}"
    );
    assert!(good_total + bad_total >= 200, "corpus looks incomplete: {} cases", good_total + bad_total);
    assert!(failures.is_empty(), "{} corpus failures:\n{}", failures.len(), failures.join("\n"));
}
