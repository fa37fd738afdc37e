//! Runs Prometheus's own PromQL test scripts (`../shared/conformance/promql`) against Vigil's engine
//! and storage, prints pass counts per file, and fails when a count drops below the committed baseline
//! (`tests/promql_baseline.txt`). Set `VIGIL_PROMQL_FAILURES=1` to print every failing case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use promql_parser::parser::{self, Expr};
use vigil_query::parse_duration_seconds;
use vigil_query::promql::{Annotations, Engine, EngineOptions, QueryControl, RangeSeries, Value};
use vigil_tsdb::{Appender, Db, DbOptions, Labels, Sample, SeriesSamples};

mod common;
use common::{Point, parse_number, parse_points, split_series};

/// Files whose every case is in the target (stable PromQL, float samples).
const TARGET_FILES: [&str; 14] = [
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "literals",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
    "limit",
    "name_label_dropping",
];

/// Functions that only apply to native histograms; cases using them are counted apart.
const NATIVE_FUNCTIONS: [&str; 6] =
    ["histogram_count", "histogram_sum", "histogram_avg", "histogram_fraction", "histogram_stddev", "histogram_stdvar"];

fn conformance_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promql/prometheus-3.x");
    assert!(
        dir.is_dir(),
        "PromQL conformance scripts not found at {}: the shared folder must sit beside the checkout",
        dir.display()
    );
    dir
}

fn time_ms(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some(positive) => parse_duration_seconds(positive).ok().map(|s| -(s * 1000.0).round() as i64),
        None => parse_duration_seconds(text).ok().map(|s| (s * 1000.0).round() as i64),
    }
}

/// An `expect warn` or `expect info` line: any annotation of the kind, or one matching a message.
#[derive(Debug)]
enum Expected {
    Any,
    Message(String),
    Pattern(regex::Regex),
}

impl Expected {
    /// Expected messages carry the expression position (`(1:5)`), which the engine does not track:
    /// positions are stripped from both sides before comparing.
    fn matches(&self, message: &str) -> bool {
        match self {
            Expected::Any => true,
            Expected::Message(text) => strip_position(text) == message,
            Expected::Pattern(regex) => regex.is_match(message),
        }
    }
}

fn strip_position(text: &str) -> &str {
    match text.rfind(" (") {
        Some(at)
            if text.ends_with(')') && text[at + 2..text.len() - 1].split(':').all(|p| p.parse::<u32>().is_ok()) =>
        {
            &text[..at]
        }
        _ => text,
    }
}

fn parse_expected(rest: &str) -> Option<Expected> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Expected::Any);
    }
    if let Some(text) = rest.strip_prefix("msg:") {
        return Some(Expected::Message(text.trim().to_owned()));
    }
    let pattern = rest.strip_prefix("regex:")?.trim();
    // Drop a trailing position pattern such as `\(1:21\)` or `\([0-9]+:[0-9]+\)`.
    let pattern = match pattern.rfind(r" \(") {
        Some(at) if pattern.ends_with(r"\)") => &pattern[..at],
        _ => pattern,
    };
    regex::Regex::new(pattern).ok().map(Expected::Pattern)
}

#[derive(Debug, Default)]
struct Expectations {
    fail: bool,
    ordered: bool,
    warn: Vec<Expected>,
    info: Vec<Expected>,
    no_warn: bool,
    no_info: bool,
    unsupported: Option<String>,
    string: Option<String>,
    /// `expect range vector from A to B step S`: the grid an instant query's range-vector result lies on.
    range_grid: Option<(i64, i64)>,
}

#[derive(Debug)]
enum Eval {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Debug)]
struct Case {
    line: usize,
    query: String,
    eval: Eval,
    expect: Expectations,
    series: Vec<(Labels, Vec<Point>)>,
    scalar: Option<f64>,
    native: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    passed: usize,
    failed: usize,
    native: usize,
}

fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= 1e-6 * a.abs().max(b.abs()) || diff < 1e-12
}

fn describe(got: &[vigil_query::promql::InstantSample]) -> Vec<(String, f64)> {
    got.iter().map(|s| (s.labels.to_string(), s.v)).collect()
}

fn check(case: &Case, result: Result<(Value, Annotations), String>) -> Result<(), String> {
    if case.expect.fail {
        return match result {
            Err(_) => Ok(()),
            Ok((value, _)) => Err(format!("expected failure, got {value:?}")),
        };
    }
    if let Some(reason) = &case.expect.unsupported {
        return Err(format!("unsupported expectation: {reason}"));
    }
    let (value, annotations) = result?;
    check_annotations("warn", &case.expect.warn, case.expect.no_warn, &annotations.warnings)?;
    check_annotations("info", &case.expect.info, case.expect.no_info, &annotations.infos)?;
    if let Some(expected) = &case.expect.string {
        return match value {
            Value::String(got) if &got == expected => Ok(()),
            other => Err(format!("expected string {expected:?}, got {other:?}")),
        };
    }
    match (&case.eval, value) {
        (Eval::Instant { .. }, Value::Scalar(got)) => match case.scalar {
            Some(want) if almost_equal(want, got) => Ok(()),
            want => Err(format!("scalar: want {want:?}, got {got}")),
        },
        (Eval::Instant { .. }, Value::Vector(got)) => compare_vector(case, &got),
        (Eval::Instant { .. }, Value::Matrix(got)) => compare_matrix(case, &got, case.expect.range_grid),
        (Eval::Range { start, step, .. }, Value::Matrix(got)) => compare_matrix(case, &got, Some((*start, *step))),
        (_, other) => Err(format!("unexpected result {other:?}")),
    }
}

/// Every expectation must match an annotation, and when any are given every annotation must be expected.
fn check_annotations(
    kind: &str,
    expected: &[Expected],
    none: bool,
    got: &std::collections::BTreeSet<String>,
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("expected no {kind} annotation, got {got:?}"));
    }
    for expectation in expected {
        if !got.iter().any(|message| expectation.matches(message)) {
            return Err(format!("expected a {kind} annotation matching {expectation:?}, got {got:?}"));
        }
    }
    if !expected.is_empty()
        && let Some(unexpected) = got.iter().find(|message| !expected.iter().any(|e| e.matches(message)))
    {
        return Err(format!("unexpected {kind} annotation {unexpected:?}"));
    }
    Ok(())
}

fn compare_vector(case: &Case, got: &[vigil_query::promql::InstantSample]) -> Result<(), String> {
    if case.scalar.is_some() {
        return Err(format!("expected scalar, got vector {:?}", describe(got)));
    }
    if got.len() != case.series.len() {
        return Err(format!("want {} series, got {}: {:?}", case.series.len(), got.len(), describe(got)));
    }
    for (position, (labels, points)) in case.series.iter().enumerate() {
        let want = match points.as_slice() {
            [Point::Value(v)] => *v,
            other => return Err(format!("instant expectation with {} points", other.len())),
        };
        let found = if case.expect.ordered {
            got.get(position).filter(|s| &s.labels == labels)
        } else {
            got.iter().find(|s| &s.labels == labels)
        };
        match found {
            Some(sample) if almost_equal(want, sample.v) => {}
            Some(sample) => return Err(format!("{labels}: want {want}, got {}", sample.v)),
            None => {
                return Err(format!("{labels} missing or out of order; got {:?}", describe(got)));
            }
        }
    }
    Ok(())
}

fn compare_matrix(case: &Case, got: &[RangeSeries], grid: Option<(i64, i64)>) -> Result<(), String> {
    if got.len() != case.series.len() {
        let names: Vec<String> = got.iter().map(|s| s.labels.to_string()).collect();
        return Err(format!("want {} series, got {}: {names:?}", case.series.len(), got.len()));
    }
    for (labels, points) in &case.series {
        let Some(series) = got.iter().find(|s| &s.labels == labels) else {
            return Err(format!("{labels} missing"));
        };
        let want: Vec<(Option<i64>, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Point::Value(v) => Some((grid.map(|(start, step)| start + i as i64 * step), *v)),
                _ => None,
            })
            .collect();
        let have: Vec<(i64, f64)> = series.samples.iter().map(|s| (s.t, s.v)).collect();
        let same = want.len() == have.len()
            && want.iter().zip(&have).all(|(w, h)| w.0.is_none_or(|t| t == h.0) && almost_equal(w.1, h.1));
        if !same {
            return Err(format!("{labels}: want {want:?}, got {have:?}"));
        }
    }
    Ok(())
}

fn run_case(db: &Db, case: &Case) -> Result<(), String> {
    let engine = Engine::new(EngineOptions::default());
    let result = match vigil_query::promql::parse(&case.query) {
        Err(error) => Err(error.to_string()),
        Ok(expr) => match case.eval {
            Eval::Instant { at } => engine
                .instant(db, &expr, at, &QueryControl::default())
                .map(|outcome| (outcome.value, outcome.annotations))
                .map_err(|e| e.to_string()),
            Eval::Range { start, end, step } => engine
                .range(db, &expr, start, end, step, &QueryControl::default())
                .map(|outcome| (Value::Matrix(outcome.value), outcome.annotations))
                .map_err(|e| e.to_string()),
        },
    };
    check(case, result)
}

fn fresh_db() -> Db {
    Db::in_memory(DbOptions { out_of_order_window_ms: i64::MAX / 4, ..DbOptions::default() })
}

fn is_command(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("eval") || line.starts_with("load") || trimmed == "clear"
}

/// Parses an `eval` header (without the `eval` word) into kind-specific expectations, the evaluation and the query.
fn parse_eval_header(rest: &str) -> (Expectations, Option<Eval>, String) {
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut expect = Expectations::default();
    match kind {
        "_fail" => expect.fail = true,
        "_ordered" => expect.ordered = true,
        "_warn" => expect.warn.push(Expected::Any),
        "_info" => expect.info.push(Expected::Any),
        _ => {}
    }
    if let Some(rest) = rest.strip_prefix("instant at ") {
        let (at, query) = rest.split_once(' ').unwrap_or((rest, ""));
        return (expect, time_ms(at).map(|at| Eval::Instant { at }), query.to_owned());
    }
    if let Some(rest) = rest.strip_prefix("range from ") {
        let parts: Vec<&str> = rest.splitn(6, ' ').collect();
        if parts.len() == 6 && parts[1] == "to" && parts[3] == "step" {
            let eval = (|| {
                Some(Eval::Range { start: time_ms(parts[0])?, end: time_ms(parts[2])?, step: time_ms(parts[4])? })
            })();
            return (expect, eval, parts[5].to_owned());
        }
    }
    (expect, None, rest.to_owned())
}

fn parse_expect_line(case: &mut Case, expectation: &str) {
    let kind = expectation.split([' ', ':']).next().unwrap_or("");
    match kind {
        "fail" => case.expect.fail = true,
        "ordered" => case.expect.ordered = true,
        "warn" | "info" => {
            let rest = expectation[kind.len()..].trim_start();
            match parse_expected(rest) {
                Some(expected) if kind == "warn" => case.expect.warn.push(expected),
                Some(expected) => case.expect.info.push(expected),
                None => case.expect.unsupported = Some(expectation.to_owned()),
            }
        }
        "no_warn" => case.expect.no_warn = true,
        "no_info" => case.expect.no_info = true,
        "range" => {
            // range vector from <start> to <end> step <step>
            let words: Vec<&str> = expectation.split_whitespace().collect();
            let grid = match words.as_slice() {
                ["range", "vector", "from", start, "to", _, "step", step] => time_ms(start).zip(time_ms(step)),
                _ => None,
            };
            match grid {
                Some(grid) => case.expect.range_grid = Some(grid),
                None => case.expect.unsupported = Some(expectation.to_owned()),
            }
        }
        "string" => {
            let quoted = expectation["string".len()..].trim();
            case.expect.string = Some(quoted[1..quoted.len() - 1].to_owned());
        }
        other => case.expect.unsupported = Some(other.to_owned()),
    }
}

/// Runs one script; returns counts and failure descriptions.
fn run_file(path: &Path) -> (Counts, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let whole_file_native = path.file_stem().is_some_and(|s| s == "native_histograms");
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    let mut db = fresh_db();
    let mut native_names: Vec<String> = Vec::new();
    // Label sets of series loaded with native-histogram points (not loaded: floats only).
    let mut native_series: Vec<Labels> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "clear" {
            db = fresh_db();
            native_names.clear();
            native_series.clear();
            continue;
        }
        if line.starts_with("load") {
            let step_ms = line.rsplit(' ').next().and_then(time_ms).unwrap_or(60_000);
            // `load_with_nhcb` also derives native histograms named after the classic `_bucket` series.
            let derives_native = line.starts_with("load_with_nhcb");
            // A later line for the same series overrides earlier points at the same times.
            let mut series: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
            while i < lines.len() && !lines[i].trim().is_empty() && !is_command(lines[i]) {
                if let Some((labels, rest)) = split_series(lines[i]) {
                    let points = parse_points(rest).unwrap_or_default();
                    let name = labels.metric_name().unwrap_or("");
                    if points.contains(&Point::Native) {
                        native_names.push(name.to_owned());
                        native_series.push(labels.clone());
                    }
                    if let Some(base) = name.strip_suffix("_bucket").filter(|_| derives_native) {
                        native_names.push(base.to_owned());
                    }
                    let stored = series.entry(labels).or_default();
                    for (k, point) in points.iter().enumerate() {
                        if let Point::Value(v) = point {
                            stored.insert(k as i64 * step_ms, *v);
                        }
                    }
                }
                i += 1;
            }
            let batch: Vec<SeriesSamples> = series
                .into_iter()
                .map(|(labels, points)| SeriesSamples {
                    labels,
                    samples: points.into_iter().map(|(t, v)| Sample { t, v }).collect(),
                })
                .collect();
            db.append(&batch).unwrap();
            continue;
        }
        let Some(rest) = line.strip_prefix("eval") else {
            continue;
        };
        let (expect, eval, query) = parse_eval_header(rest);
        let mut case = Case {
            line: i,
            query,
            eval: eval.unwrap_or(Eval::Instant { at: 0 }),
            expect,
            series: Vec::new(),
            scalar: None,
            native: whole_file_native,
        };
        while i < lines.len() && !lines[i].trim().is_empty() && !is_command(lines[i]) {
            let body = lines[i].trim();
            i += 1;
            if body.starts_with('#') {
                continue;
            }
            if let Some(expectation) = body.strip_prefix("expect ") {
                parse_expect_line(&mut case, expectation);
                continue;
            }
            if body.contains("{{") {
                case.native = true;
            }
            if let Some(value) = parse_number(body) {
                case.scalar = Some(value);
                continue;
            }
            match split_series(body).and_then(|(labels, rest)| Some((labels, parse_points(rest)?))) {
                Some(series) => case.series.push(series),
                None => case.expect.unsupported = Some(format!("expected line {body:?}")),
            }
        }
        let touches_native =
            native_names.iter().any(|name| mentions(&case.query, name)) || selects_any(&case.query, &native_series);
        // Expected native-histogram output or native-only functions cannot pass without native histograms.
        if case.native || NATIVE_FUNCTIONS.iter().any(|f| case.query.contains(f)) {
            counts.native += 1;
            continue;
        }
        // A query that also selects native-histogram series may still pass on the float series; if it
        // fails, the failure is counted with the native cases.
        match run_case(&db, &case) {
            Ok(()) => counts.passed += 1,
            Err(_) if touches_native => counts.native += 1,
            Err(reason) => {
                counts.failed += 1;
                failures.push(format!("{file_name}:{}: {} -- {reason}", case.line, case.query));
            }
        }
    }
    (counts, failures)
}

/// True when some selector of `query` matches one of `series` (found by walking the parsed expression).
fn selects_any(query: &str, series: &[Labels]) -> bool {
    fn selectors(expr: &Expr, out: &mut Vec<String>) {
        match expr {
            Expr::VectorSelector(selector) => out.push(selector.to_string()),
            Expr::MatrixSelector(matrix) => out.push(matrix.vs.to_string()),
            Expr::Subquery(subquery) => selectors(&subquery.expr, out),
            Expr::Aggregate(aggregate) => {
                selectors(&aggregate.expr, out);
                if let Some(param) = &aggregate.param {
                    selectors(param, out);
                }
            }
            Expr::Unary(unary) => selectors(&unary.expr, out),
            Expr::Binary(binary) => {
                selectors(&binary.lhs, out);
                selectors(&binary.rhs, out);
            }
            Expr::Paren(paren) => selectors(&paren.expr, out),
            Expr::Call(call) => call.args.args.iter().for_each(|arg| selectors(arg, out)),
            _ => {}
        }
    }
    if series.is_empty() {
        return false;
    }
    let Ok(expr) = parser::parse(query) else { return false };
    let mut texts = Vec::new();
    selectors(&expr, &mut texts);
    texts.iter().any(|text| {
        // The printed selector may carry `offset`/`@`; only the matchers matter here.
        let matchers_only = text.split(" offset ").next().unwrap_or(text).split(" @ ").next().unwrap_or(text);
        let Ok(alternatives) = vigil_query::parse_selector(matchers_only) else { return false };
        alternatives.iter().any(|matchers| {
            series.iter().any(|labels| matchers.iter().all(|m| m.matches(labels.get(&m.name).unwrap_or(""))))
        })
    })
}

/// True when `query` names the metric `name` as a whole identifier, not as part of a longer one.
fn mentions(query: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    query.match_indices(name).any(|(at, _)| {
        let before = query[..at].chars().next_back();
        let after = query[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

fn baseline() -> BTreeMap<String, usize> {
    include_str!("promql_baseline.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, count) = l.split_once(char::is_whitespace).expect("`name count` lines");
            (name.to_owned(), count.trim().parse().expect("a count"))
        })
        .collect()
}

#[test]
fn prometheus_promql_test_scripts() {
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    let show_failures = std::env::var_os("VIGIL_PROMQL_FAILURES").is_some();
    let baseline = baseline();
    let mut regressions = Vec::new();
    let (mut target, mut other) = (Counts::default(), Counts::default());
    println!("{:<24} {:>7} {:>7} {:>7}  set", "file", "passed", "failed", "native");
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let (counts, failures) = run_file(path);
        let in_target = TARGET_FILES.contains(&name.as_str());
        let total = if in_target { &mut target } else { &mut other };
        total.passed += counts.passed;
        total.failed += counts.failed;
        total.native += counts.native;
        let set = if in_target { "target" } else { "experimental" };
        println!("{name:<24} {:>7} {:>7} {:>7}  {set}", counts.passed, counts.failed, counts.native);
        if show_failures {
            failures.iter().for_each(|f| println!("  FAIL {f}"));
        }
        if let Some(expected) = baseline.get(&name)
            && counts.passed < *expected
        {
            regressions.push(format!("{name}: {} passed, baseline {expected}", counts.passed));
        }
    }
    println!(
        "target files: {} passed, {} failed, {} native-histogram cases apart",
        target.passed, target.failed, target.native
    );
    println!(
        "experimental files: {} passed, {} failed, {} native-histogram cases",
        other.passed, other.failed, other.native
    );
    assert!(target.passed > 0, "no conformance case passed: the runner is broken");
    assert!(regressions.is_empty(), "conformance regressions: {regressions:#?}");
}

#[test]
fn series_notation_expands_like_promtool() {
    let points = parse_points("1 2+3x2 _ stale -1-2x2 _x2 4x1").unwrap();
    let values: Vec<String> = points
        .iter()
        .map(|p| match p {
            Point::Value(v) if v.is_nan() => "stale".into(),
            Point::Value(v) => v.to_string(),
            Point::Gap => "_".into(),
            Point::Native => "h".into(),
        })
        .collect();
    assert_eq!(values, ["1", "2", "5", "8", "_", "stale", "-1", "-3", "-5", "_", "_", "4", "4"]);
}
