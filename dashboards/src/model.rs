//! Vigil's dashboard files: a title, variables and panels holding PromQL or LogQL queries.

use serde::{Deserialize, Serialize};

/// A dashboard as stored in a JSON file under `dashboards/bundled/` or `<data-dir>/dashboards/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Shown as the page heading.
    pub title: String,
    /// One line under the heading.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Values substituted for `$name` in every query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// Panels, laid out three to a row.
    pub panels: Vec<Panel>,
}

/// A variable: the values of `label` on the series of `metric`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Referenced as `$name` in queries.
    pub name: String,
    /// The label whose values are offered.
    pub label: String,
    /// The metric whose series carry the label.
    pub metric: String,
}

/// One panel of a dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// Shown above the panel.
    pub title: String,
    /// How the result is drawn.
    #[serde(rename = "type")]
    pub kind: PanelKind,
    /// Which query language and API the query goes to.
    #[serde(default, skip_serializing_if = "Datasource::is_prometheus")]
    pub datasource: Datasource,
    /// PromQL, or LogQL when the datasource is Loki.
    pub query: String,
    /// How values are formatted.
    #[serde(default, skip_serializing_if = "Unit::is_none")]
    pub unit: Unit,
    /// Legend template with `{{label}}` placeholders.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub legend: String,
    /// Columns taken, 1 to 3.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub width: u8,
}

fn one() -> u8 {
    1
}

fn is_one(width: &u8) -> bool {
    *width == 1
}

/// How a panel draws its result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PanelKind {
    /// Lines over the time range.
    Graph,
    /// The current value of the first series.
    Stat,
    /// The newest log lines.
    Logs,
}

/// Where a panel's query goes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Datasource {
    /// The Prometheus API (PromQL).
    #[default]
    Prometheus,
    /// The Loki API (LogQL).
    Loki,
}

impl Datasource {
    fn is_prometheus(&self) -> bool {
        *self == Datasource::Prometheus
    }
}

/// How a panel formats its values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Plain numbers with SI prefixes.
    #[default]
    #[serde(rename = "")]
    None,
    /// Bytes with binary prefixes.
    Bytes,
    /// CPU cores (millicores below one).
    Cores,
    /// A ratio shown as a percentage.
    Percent,
    /// Seconds.
    Seconds,
}

impl Unit {
    fn is_none(&self) -> bool {
        *self == Unit::None
    }
}

/// Why a dashboard file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON, or not a dashboard's shape.
    #[error("{file}: {source}")]
    Parse {
        /// The file name.
        file: String,
        /// What serde found.
        source: serde_json::Error,
    },
    /// A panel that cannot be drawn as asked.
    #[error("{file}: panel {panel:?}: {reason}")]
    Invalid {
        /// The file name.
        file: String,
        /// The panel title.
        panel: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Dashboard {
    /// Parses and checks a dashboard file; `file` names it in errors.
    pub fn parse(file: &str, text: &[u8]) -> Result<Dashboard, Error> {
        let dashboard: Dashboard =
            serde_json::from_slice(text).map_err(|source| Error::Parse { file: file.to_owned(), source })?;
        for panel in &dashboard.panels {
            let invalid = |reason| Error::Invalid { file: file.to_owned(), panel: panel.title.clone(), reason };
            if panel.query.trim().is_empty() {
                return Err(invalid("empty query"));
            }
            if !(1..=3).contains(&panel.width) {
                return Err(invalid("width must be 1, 2 or 3"));
            }
            if panel.kind == PanelKind::Logs && panel.datasource != Datasource::Loki {
                return Err(invalid("a logs panel needs \"datasource\": \"loki\""));
            }
            if panel.kind == PanelKind::Stat && panel.datasource == Datasource::Loki {
                return Err(invalid("stat panels take PromQL"));
            }
        }
        Ok(dashboard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_panels_are_refused_with_the_file_named() {
        let unknown = br#"{"title":"x","panels":[],"colour":"red"}"#;
        let error = Dashboard::parse("a.json", unknown).unwrap_err().to_string();
        assert!(error.starts_with("a.json: unknown field `colour`"), "{error}");
        let logs_on_prometheus = br#"{"title":"x","panels":[{"title":"p","type":"logs","query":"{a=\"b\"}"}]}"#;
        let error = Dashboard::parse("b.json", logs_on_prometheus).unwrap_err().to_string();
        assert_eq!(error, r#"b.json: panel "p": a logs panel needs "datasource": "loki""#);
        let wide = br#"{"title":"x","panels":[{"title":"p","type":"graph","query":"up","width":4}]}"#;
        assert!(Dashboard::parse("c.json", wide).is_err());
    }

    #[test]
    fn defaults_are_left_out_when_written_back() {
        let text = br#"{"title":"x","panels":[{"title":"p","type":"graph","query":"up"}]}"#;
        let dashboard = Dashboard::parse("d.json", text).unwrap();
        assert_eq!(dashboard.panels[0].width, 1);
        assert_eq!(serde_json::to_vec(&dashboard).unwrap(), text.to_vec());
    }
}
