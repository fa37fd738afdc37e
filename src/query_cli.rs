//! `vigil query`: runs PromQL against a server's HTTP API and prints the result.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::QueryArgs;

/// Sends the query and prints the result (a table, or the raw JSON with `--json`).
pub fn run(args: &QueryArgs) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = args.server.trim_end_matches('/');
    let (path, mut form) = match (&args.start, &args.end, &args.step) {
        (Some(start), Some(end), Some(step)) => {
            ("/api/v1/query_range", vec![("start", start.clone()), ("end", end.clone()), ("step", step.clone())])
        }
        _ => ("/api/v1/query", args.time.iter().map(|t| ("time", t.clone())).collect()),
    };
    form.push(("query", args.expr.clone()));
    let mut request = agent.post(format!("{base}{path}"));
    if let Some(token) = &args.token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.send_form(form).with_context(|| format!("cannot reach {base}"))?;
    let body = response.body_mut().read_to_string().context("cannot read the response")?;
    let parsed: Value = serde_json::from_str(&body).with_context(|| format!("not a JSON response: {body}"))?;
    if parsed["status"] != "success" {
        bail!("{}: {}", parsed["errorType"].as_str().unwrap_or("error"), parsed["error"].as_str().unwrap_or(&body));
    }
    if args.json {
        println!("{body}");
        return Ok(());
    }
    print!("{}", render(&parsed["data"]));
    Ok(())
}

fn labels_text(metric: &Value) -> String {
    let Some(map) = metric.as_object() else {
        return "{}".into();
    };
    let name = map.get("__name__").and_then(Value::as_str).unwrap_or("");
    let pairs: Vec<String> = map
        .iter()
        .filter(|(key, _)| key.as_str() != "__name__")
        .map(|(key, value)| format!("{key}={}", value))
        .collect();
    format!("{name}{{{}}}", pairs.join(", "))
}

/// One line per sample: `labels => value @ time` (Prometheus console style).
fn render(data: &Value) -> String {
    let mut out = String::new();
    let point = |p: &Value| format!("{} @ {}", p[1].as_str().unwrap_or(""), p[0]);
    match data["resultType"].as_str() {
        Some("vector") => {
            for sample in data["result"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "{} => {}", labels_text(&sample["metric"]), point(&sample["value"]));
            }
        }
        Some("matrix") => {
            for series in data["result"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "{} =>", labels_text(&series["metric"]));
                for value in series["values"].as_array().into_iter().flatten() {
                    let _ = writeln!(out, "  {}", point(value));
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{}", point(&data["result"]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_each_result_type() {
        let vector = json!({"resultType": "vector", "result": [{"metric": {"__name__": "up", "job": "node"}, "value": [4, "1"]}]});
        assert_eq!(render(&vector), "up{job=\"node\"} => 1 @ 4\n");
        let matrix = json!({"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "2"], [2, "3"]]}]});
        assert_eq!(render(&matrix), "{} =>\n  2 @ 1\n  3 @ 2\n");
        assert_eq!(render(&json!({"resultType": "scalar", "result": [4, "2"]})), "2 @ 4\n");
    }
}
