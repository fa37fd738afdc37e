//! The bundled dashboards as Grafana dashboard JSON, for Grafana's file provisioning
//! (`dashboards/grafana/`), against the data sources that `datasources.yaml` there declares.

use crate::model::{Dashboard, Datasource, PanelKind, Unit};
use serde_json::{Value, json};

/// The uid of the provisioned Prometheus data source (Vigil's Prometheus API).
pub const PROMETHEUS_UID: &str = "vigil-prometheus";
/// The uid of the provisioned Loki data source (Vigil's Loki API).
pub const LOKI_UID: &str = "vigil-loki";

/// Grafana's grid is 24 columns wide; a Vigil panel column is a third of it.
const COLUMN: u64 = 8;
const PANEL_HEIGHT: u64 = 8;

fn datasource(source: Datasource) -> Value {
    match source {
        Datasource::Prometheus => json!({"type": "prometheus", "uid": PROMETHEUS_UID}),
        Datasource::Loki => json!({"type": "loki", "uid": LOKI_UID}),
    }
}

fn unit(unit: Unit) -> &'static str {
    match unit {
        Unit::None | Unit::Cores => "short",
        Unit::Bytes => "bytes",
        Unit::Percent => "percentunit",
        Unit::Seconds => "s",
    }
}

/// Converts a dashboard; `id` becomes the uid `vigil-<id>`, so links stay stable across provisioning.
pub fn convert(id: &str, dashboard: &Dashboard) -> Value {
    let variables: Vec<Value> = dashboard
        .variables
        .iter()
        .map(|v| {
            let query = format!("label_values({}, {})", v.metric, v.label);
            json!({
                "name": v.name, "type": "query", "datasource": datasource(Datasource::Prometheus),
                "definition": query, "query": {"query": query, "refId": "VariableQuery"}, "refresh": 2,
            })
        })
        .collect();
    let (mut x, mut y) = (0, 0);
    let mut panels = Vec::new();
    for (index, panel) in dashboard.panels.iter().enumerate() {
        let width = COLUMN * u64::from(panel.width);
        if x + width > 24 {
            (x, y) = (0, y + PANEL_HEIGHT);
        }
        let kind = match panel.kind {
            PanelKind::Graph => "timeseries",
            PanelKind::Stat => "stat",
            PanelKind::Logs => "logs",
        };
        let mut target = json!({"refId": "A", "expr": panel.query, "datasource": datasource(panel.datasource)});
        if !panel.legend.is_empty() {
            target["legendFormat"] = json!(panel.legend);
        }
        panels.push(json!({
            "id": index + 1, "type": kind, "title": panel.title, "datasource": datasource(panel.datasource),
            "gridPos": {"x": x, "y": y, "w": width, "h": PANEL_HEIGHT},
            "targets": [target],
            "fieldConfig": {"defaults": {"unit": unit(panel.unit)}, "overrides": []},
        }));
        x += width;
    }
    json!({
        "uid": format!("vigil-{id}"), "title": dashboard.title, "description": dashboard.description,
        "tags": ["vigil"], "schemaVersion": 39, "editable": true, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"}, "templating": {"list": variables}, "panels": panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_flow_into_rows_of_24_columns() {
        let text = br#"{"title":"t","variables":[{"name":"node","label":"instance","metric":"up"}],"panels":[
            {"title":"a","type":"graph","query":"up","width":2},
            {"title":"b","type":"stat","query":"up","unit":"bytes"},
            {"title":"c","type":"logs","datasource":"loki","query":"{job=\"x\"}","width":3}]}"#;
        let grafana = convert("t", &Dashboard::parse("t.json", text).unwrap());
        let grid: Vec<_> = grafana["panels"].as_array().unwrap().iter().map(|p| p["gridPos"].clone()).collect();
        assert_eq!(grid[0], json!({"x": 0, "y": 0, "w": 16, "h": 8}));
        assert_eq!(grid[1], json!({"x": 16, "y": 0, "w": 8, "h": 8}));
        assert_eq!(grid[2], json!({"x": 0, "y": 8, "w": 24, "h": 8}));
        assert_eq!(grafana["panels"][1]["fieldConfig"]["defaults"]["unit"], "bytes");
        assert_eq!(grafana["panels"][2]["datasource"]["uid"], LOKI_UID);
        assert_eq!(grafana["templating"]["list"][0]["definition"], "label_values(up, instance)");
    }
}
