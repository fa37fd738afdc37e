//! Rule files in Prometheus's format, checked as `promtool check rules` checks them; errors name the
//! file, the line of the group or rule, and the reason.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::template::Template;
use super::{AlertingSpec, Language, Rule, RuleExpr, RuleGroup, RuleKind, RulesError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    interval: Option<String>,
    query_offset: Option<String>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<String>,
    alert: Option<String>,
    #[serde(deserialize_with = "scalar_text")]
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `expr: 1` is a YAML number; Prometheus reads it as the text `1`.
fn scalar_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(deserializer)? {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        other => Err(serde::de::Error::custom(format!("expr must be a string, not {other:?}"))),
    }
}

/// Reads and checks every file of PromQL rules; the first problem fails the whole load.
pub fn load_files(paths: &[PathBuf], default_interval_ms: i64) -> Result<Vec<RuleGroup>, RulesError> {
    load_files_as(paths, default_interval_ms, Language::PromQL)
}

/// Reads and checks rule files whose expressions are in `language` (LogQL for log rules, as Loki's ruler).
pub fn load_files_as(
    paths: &[PathBuf],
    default_interval_ms: i64,
    language: Language,
) -> Result<Vec<RuleGroup>, RulesError> {
    let mut groups = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| RulesError::File {
            file: path.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        groups.extend(parse_file_as(path, &text, default_interval_ms, language)?);
    }
    Ok(groups)
}

/// Parses one file's text of PromQL rules.
pub fn parse_file(path: &Path, text: &str, default_interval_ms: i64) -> Result<Vec<RuleGroup>, RulesError> {
    parse_file_as(path, text, default_interval_ms, Language::PromQL)
}

/// Parses one file's text with expressions in `language`.
pub fn parse_file_as(
    path: &Path,
    text: &str,
    default_interval_ms: i64,
    language: Language,
) -> Result<Vec<RuleGroup>, RulesError> {
    let error = |line: usize, reason: String| RulesError::File { file: path.to_owned(), line, reason };
    let raw: RawFile = match serde_yaml::from_str(text) {
        Ok(raw) => raw,
        Err(e) if text.trim().is_empty() || e.to_string().contains("EOF while parsing") => RawFile { groups: vec![] },
        Err(e) => return Err(error(e.location().map_or(0, |l| l.line()), e.to_string())),
    };
    let lines = KeyLines::new(text);
    let mut names = HashSet::new();
    let mut rule_index = 0;
    let mut groups = Vec::new();
    for (group_index, group) in raw.groups.into_iter().enumerate() {
        let group_line = lines.nth_group(group_index);
        if group.name.is_empty() {
            return Err(error(group_line, "group name should not be empty".into()));
        }
        if !names.insert(group.name.clone()) {
            return Err(error(group_line, format!("{}: repeated in the same file", group.name)));
        }
        let in_group = |reason: String| format!("group {:?}, {reason}", group.name);
        let interval_ms = match &group.interval {
            Some(raw) => duration_ms(raw).map_err(|e| error(group_line, in_group(e)))?,
            None => default_interval_ms,
        };
        if interval_ms <= 0 {
            return Err(error(group_line, in_group("interval must be positive".into())));
        }
        let query_offset_ms = match &group.query_offset {
            Some(raw) => duration_ms(raw).map_err(|e| error(group_line, in_group(e)))?,
            None => 0,
        };
        check_labels(&group.labels).map_err(|e| error(group_line, in_group(e)))?;
        let mut rules = Vec::new();
        for (index, raw_rule) in group.rules.into_iter().enumerate() {
            let line = lines.nth_rule(rule_index);
            rule_index += 1;
            let name = raw_rule.record.clone().or(raw_rule.alert.clone()).unwrap_or_default();
            let rule = check_rule(raw_rule, language)
                .map_err(|e| error(line, format!("group {:?}, rule {}, {:?}: {e}", group.name, index + 1, name)))?;
            rules.push(rule);
        }
        groups.push(RuleGroup {
            name: group.name,
            file: path.to_owned(),
            interval_ms,
            query_offset_ms,
            limit: group.limit,
            labels: group.labels,
            rules,
        });
    }
    Ok(groups)
}

fn check_rule(raw: RawRule, language: Language) -> Result<Rule, String> {
    let kind_name = match (&raw.record, &raw.alert) {
        (Some(_), Some(_)) => return Err("only one of 'record' and 'alert' must be set".into()),
        (None, None) => return Err("one of 'record' or 'alert' must be set".into()),
        (Some(record), None) => {
            if record.is_empty() || !is_metric_name(record) {
                return Err(format!("invalid recording rule name: {record}"));
            }
            if raw.for_.is_some() || raw.keep_firing_for.is_some() {
                return Err("invalid field 'for' or 'keep_firing_for' in recording rule".into());
            }
            if !raw.annotations.is_empty() {
                return Err("invalid field 'annotations' in recording rule".into());
            }
            record.clone()
        }
        (None, Some(alert)) => {
            if alert.is_empty() {
                return Err("alert name must not be empty".into());
            }
            alert.clone()
        }
    };
    if raw.expr.trim().is_empty() {
        return Err("field 'expr' must be set in rule".into());
    }
    let expr = match language {
        Language::PromQL => RuleExpr::PromQL(crate::promql::parse(&raw.expr).map_err(|e| {
            let message = e.to_string();
            format!("could not parse expression: {}", message.trim_start_matches("invalid parameter \"query\": "))
        })?),
        Language::LogQL => {
            match crate::logql::parse(&raw.expr).map_err(|e| format!("could not parse expression: {e}"))? {
                logql::Expr::Metric(query) => RuleExpr::LogQL(Box::new(query)),
                _ => return Err("a log rule's expression must be a LogQL metric query".into()),
            }
        }
    };
    check_labels(&raw.labels)?;
    for (name, text) in raw.labels.iter().chain(&raw.annotations) {
        Template::parse(text).map_err(|e| format!("template in {name:?}: {e}"))?;
    }
    let kind = match raw.alert {
        None => RuleKind::Recording,
        Some(_) => RuleKind::Alerting(AlertingSpec {
            for_ms: raw.for_.as_deref().map(duration_ms).transpose()?.unwrap_or(0),
            keep_firing_for_ms: raw.keep_firing_for.as_deref().map(duration_ms).transpose()?.unwrap_or(0),
            annotations: raw.annotations,
        }),
    };
    Ok(Rule { name: kind_name, expr_text: raw.expr, expr, labels: raw.labels, kind })
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for name in labels.keys() {
        if name == "__name__" {
            return Err("invalid label name: __name__".into());
        }
        if !is_label_name(name) {
            return Err(format!("invalid label name: {name}"));
        }
    }
    Ok(())
}

fn duration_ms(raw: &str) -> Result<i64, String> {
    let seconds = crate::parse_duration_seconds(raw)?;
    Ok((seconds * 1000.0).round() as i64)
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// 1-based line numbers of block-style keys, to point errors at the group or rule they concern.
struct KeyLines {
    names: Vec<usize>,
    rules: Vec<usize>,
}

impl KeyLines {
    fn new(text: &str) -> Self {
        let (mut names, mut rules) = (Vec::new(), Vec::new());
        for (index, line) in text.lines().enumerate() {
            let key = line.trim_start().trim_start_matches("- ").trim_start();
            if key.starts_with("name:") {
                names.push(index + 1);
            } else if key.starts_with("record:") || key.starts_with("alert:") {
                rules.push(index + 1);
            }
        }
        KeyLines { names, rules }
    }

    fn nth_group(&self, index: usize) -> usize {
        self.names.get(index).copied().unwrap_or(0)
    }

    fn nth_rule(&self, index: usize) -> usize {
        self.rules.get(index).copied().unwrap_or(0)
    }
}
