//! `vigil top nodes|pods`: `kubectl top` against a Vigil server's Metrics API, with kubectl's columns,
//! rounding (CPU millicores rounded up, memory in whole Mi), sorting and tab layout.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::TopArgs;

/// Sends a GET and parses JSON; Kubernetes `Status` errors become messages.
struct Api {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Api {
    fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.get_with(path, None)
    }

    /// GET with an optional `labelSelector` query parameter (ureq encodes it).
    fn get_with(&self, path: &str, selector: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(selector) = selector {
            request = request.query("labelSelector", selector);
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call().with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().context("cannot read the response")?;
        let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
        Ok((status, parsed))
    }

    fn list(&self, path: &str, selector: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.get_with(path, selector)?;
        if status != 200 {
            bail!("{}", body["message"].as_str().unwrap_or("request failed"));
        }
        Ok(body["items"].as_array().cloned().unwrap_or_default())
    }
}

/// Prints the table; errors carry kubectl's messages.
pub fn run(args: &TopArgs) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let api = Api { agent, base: args.server.trim_end_matches('/').to_owned(), token: args.token.clone() };
    if let Some(sort) = &args.sort_by
        && sort != "cpu"
        && sort != "memory"
    {
        bail!("--sort-by accepts only cpu or memory");
    }
    let (status, groups) = api.get("/apis")?;
    let available = status == 200
        && groups["groups"].as_array().is_some_and(|g| g.iter().any(|group| group["name"] == "metrics.k8s.io"));
    if !available {
        bail!("Metrics API not available");
    }
    let table = match args.resource.as_str() {
        "nodes" | "node" | "no" => nodes(&api, args)?,
        "pods" | "pod" | "po" => pods(&api, args)?,
        other => bail!("unknown resource {other:?}: use nodes or pods"),
    };
    print!("{table}");
    Ok(())
}

fn nodes(api: &Api, args: &TopArgs) -> anyhow::Result<String> {
    let base = "/apis/metrics.k8s.io/v1beta1/nodes";
    let mut metrics = match &args.name {
        Some(name) => vec![single(api, &format!("{base}/{name}"))?],
        None => api.list(base, args.selector.as_deref())?,
    };
    let node_objects = match &args.name {
        Some(name) => vec![single(api, &format!("/api/v1/nodes/{name}"))?],
        None => api.list("/api/v1/nodes", args.selector.as_deref())?,
    };
    if metrics.is_empty() {
        bail!("metrics not available yet");
    }
    let allocatable = |name: &str| {
        node_objects.iter().find(|n| n["metadata"]["name"] == name).map(|n| {
            let resources = &n["status"]["allocatable"];
            (milli_cpu(&resources["cpu"]), bytes(&resources["memory"]).saturating_mul(1000))
        })
    };
    sort(&mut metrics, args.sort_by.as_deref(), |m| usage(&m["usage"]), |m| name_of(m).to_owned());
    let mut rows = Vec::new();
    if !args.no_headers {
        rows.push(cells(&["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]));
    }
    let mut listed = Vec::new();
    for metric in &metrics {
        let name = name_of(metric);
        let (cpu, memory) = usage(&metric["usage"]);
        let mut row = vec![name.to_owned(), format!("{cpu}m")];
        let capacity = allocatable(name);
        if let Some((cpu_capacity, _)) = capacity {
            row.push(percent(cpu, cpu_capacity));
        }
        row.push(format!("{}Mi", memory / 1000 / (1024 * 1024)));
        if let Some((_, memory_capacity)) = capacity {
            row.push(percent(memory, memory_capacity));
        }
        rows.push(row);
        listed.push(name.to_owned());
    }
    for node in &node_objects {
        let name = name_of(node);
        if !listed.iter().any(|l| l == name) {
            rows.push(vec![
                name.to_owned(),
                "<unknown>".into(),
                "<unknown>".into(),
                "<unknown>".into(),
                "<unknown>".into(),
            ]);
        }
    }
    Ok(tab_layout(&rows))
}

fn pods(api: &Api, args: &TopArgs) -> anyhow::Result<String> {
    let namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
    let base = if args.all_namespaces {
        "/apis/metrics.k8s.io/v1beta1/pods".to_owned()
    } else {
        format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods")
    };
    let mut metrics = match &args.name {
        Some(name) => vec![single(api, &format!("{base}/{name}"))?],
        None => api.list(&base, args.selector.as_deref())?,
    };
    if metrics.is_empty() {
        if args.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {namespace} namespace.");
        }
        return Ok(String::new());
    }
    let pod_usage = |m: &Value| {
        let containers = m["containers"].as_array().cloned().unwrap_or_default();
        let nanos: u128 = containers.iter().map(|c| nano_cpu(&c["usage"]["cpu"])).sum();
        let memory: u128 = containers.iter().map(|c| bytes(&c["usage"]["memory"])).sum();
        (ceil_div(nanos, 1_000_000), memory * 1000)
    };
    let with_namespace = args.all_namespaces;
    sort(&mut metrics, args.sort_by.as_deref(), pod_usage, |m| {
        let namespace = if with_namespace { m["metadata"]["namespace"].as_str().unwrap_or("") } else { "" };
        format!("{namespace}\u{0}{}", name_of(m))
    });
    let mut rows = Vec::new();
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE");
    }
    if args.containers {
        header.push("POD");
    }
    header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"]);
    if !args.no_headers {
        rows.push(cells(&header));
    }
    let (mut total_nanos, mut total_bytes) = (0u128, 0u128);
    for metric in &metrics {
        let prefix: Vec<String> = if with_namespace {
            vec![metric["metadata"]["namespace"].as_str().unwrap_or("").to_owned()]
        } else {
            vec![]
        };
        let name = name_of(metric).to_owned();
        let mut containers = metric["containers"].as_array().cloned().unwrap_or_default();
        for container in &containers {
            total_nanos += nano_cpu(&container["usage"]["cpu"]);
            total_bytes += bytes(&container["usage"]["memory"]);
        }
        if args.containers {
            sort(
                &mut containers,
                args.sort_by.as_deref(),
                |c| usage(&c["usage"]),
                |c| c["name"].as_str().unwrap_or("").to_owned(),
            );
            for container in &containers {
                let (cpu, memory) = usage(&container["usage"]);
                let mut row = prefix.clone();
                row.extend([name.clone(), container["name"].as_str().unwrap_or("").to_owned()]);
                row.extend([format!("{cpu}m"), format!("{}Mi", memory / 1000 / (1024 * 1024))]);
                rows.push(row);
            }
        } else {
            let (cpu, memory) = pod_usage(metric);
            let mut row = prefix;
            row.extend([name, format!("{cpu}m"), format!("{}Mi", memory / 1000 / (1024 * 1024))]);
            rows.push(row);
        }
    }
    if args.sum {
        let width = header.len();
        let mut underline = vec![String::new(); width - 2];
        underline.extend(["________".to_owned(), "________".to_owned()]);
        rows.push(underline);
        let mut totals = vec![String::new(); width - 2];
        totals.extend([format!("{}m", ceil_div(total_nanos, 1_000_000)), format!("{}Mi", total_bytes / (1024 * 1024))]);
        rows.push(totals);
    }
    Ok(tab_layout(&rows))
}

fn single(api: &Api, path: &str) -> anyhow::Result<Value> {
    let (status, body) = api.get(path)?;
    if status != 200 {
        bail!("{}", body["message"].as_str().unwrap_or("request failed"));
    }
    Ok(body)
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

fn cells(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

/// Sorts by name (or the given key), or by CPU or memory usage, highest first, as kubectl does.
fn sort<U, K>(items: &mut [Value], by: Option<&str>, usage: U, key: K)
where
    U: Fn(&Value) -> (u128, u128),
    K: Fn(&Value) -> String,
{
    match by {
        Some("cpu") => items.sort_by_key(|item| std::cmp::Reverse(usage(item).0)),
        Some("memory") => items.sort_by_key(|item| std::cmp::Reverse(usage(item).1)),
        _ => items.sort_by_key(key),
    }
}

/// (CPU in millicores rounded up, memory in milli-bytes) of a `usage` object, as kubectl's `MilliValue`.
fn usage(usage: &Value) -> (u128, u128) {
    (ceil_div(nano_cpu(&usage["cpu"]), 1_000_000), bytes(&usage["memory"]) * 1000)
}

fn percent(used_milli: u128, capacity_milli: u128) -> String {
    if capacity_milli == 0 {
        return "0%".into();
    }
    format!("{}%", (used_milli as f64 / capacity_milli as f64 * 100.0) as i64)
}

fn ceil_div(value: u128, divisor: u128) -> u128 {
    value.div_ceil(divisor)
}

/// A CPU quantity (`250m`, `1203049n`, `2`) in nanocores.
fn nano_cpu(quantity: &Value) -> u128 {
    let text = quantity.as_str().unwrap_or("0");
    let (number, scale) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((index, _)) => (&text[..index], &text[index..]),
        None => (text, ""),
    };
    let multiplier: f64 = match scale {
        "n" => 1.0,
        "u" => 1e3,
        "m" => 1e6,
        "" => 1e9,
        "k" => 1e12,
        _ => 0.0,
    };
    (number.parse::<f64>().unwrap_or(0.0) * multiplier).round() as u128
}

/// A CPU quantity in millicores, rounded up.
fn milli_cpu(quantity: &Value) -> u128 {
    ceil_div(nano_cpu(quantity), 1_000_000)
}

/// A memory quantity (`1620112Ki`, `12Mi`, `1000000`, `1G`) in bytes.
fn bytes(quantity: &Value) -> u128 {
    let text = quantity.as_str().unwrap_or("0");
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => 0,
    };
    number.parse::<u128>().unwrap_or(0) * multiplier
}

/// kubectl's tab writer: every cell tab-terminated, columns as wide as their widest cell plus 3 spaces, at
/// least 6, left-aligned, padded with spaces (so lines end in padding).
fn tab_layout(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count() + 3).max().unwrap_or(0).max(6))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quantities_round_like_kubectl() {
        assert_eq!(usage(&json!({"cpu": "1203049n", "memory": "5124Ki"})), (2, 5124 * 1024 * 1000));
        assert_eq!(usage(&json!({"cpu": "249871063n", "memory": "0"})).0, 250);
        assert_eq!(milli_cpu(&json!("8")), 8000);
        assert_eq!(bytes(&json!("16Gi")), 16 << 30);
        assert_eq!(percent(250, 8000), "3%");
    }

    #[test]
    fn layout_pads_every_cell_as_go_tabwriter_does() {
        let rows = vec![cells(&["NAME", "CPU(cores)"]), cells(&["node-a", "412m"])];
        assert_eq!(tab_layout(&rows), "NAME     CPU(cores)   \nnode-a   412m         \n");
    }
}
