//! Prometheus's relabeling: `relabel_configs` (on a target's labels, `__address__`, `__scheme__`,
//! `__metrics_path__` included) and `metric_relabel_configs` (on each scraped sample, `__name__` included),
//! with every action: `replace`, `keep`, `drop`, `keepequal`, `dropequal`, `hashmod`, `labelmap`,
//! `labeldrop`, `labelkeep`, `lowercase`, `uppercase`.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

/// One relabel rule as written in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` into the source value.
    #[serde(default)]
    pub source_labels: Vec<String>,
    /// [default: `;`]
    pub separator: Option<String>,
    /// [default: `(.*)`], anchored at both ends.
    pub regex: Option<String>,
    /// For `hashmod`.
    pub modulus: Option<u64>,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`; compared by `keepequal`/`dropequal`.
    pub target_label: Option<String>,
    /// [default: `$1`]
    pub replacement: Option<String>,
    /// [default: `replace`]
    pub action: Option<String>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    modulus: u64,
    target_label: String,
    replacement: String,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl RelabelConfig {
    /// Checks and compiles the rule as Prometheus does when it loads a config.
    pub fn compile(&self) -> Result<Rule, String> {
        let action = match self.action.as_deref().unwrap_or("replace") {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            other => return Err(format!("unknown relabel action {other:?}")),
        };
        let pattern = self.regex.as_deref().unwrap_or("(.*)");
        let regex =
            Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| format!("invalid relabel regex {pattern:?}: {e}"))?;
        let target_label = self.target_label.clone().unwrap_or_default();
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target_label.is_empty() {
            return Err(format!(
                "relabel action {:?} needs a target_label",
                self.action.as_deref().unwrap_or("replace")
            ));
        }
        if action == Action::HashMod && self.modulus.unwrap_or(0) == 0 {
            return Err("relabel action hashmod needs a non-zero modulus".into());
        }
        Ok(Rule {
            source_labels: self.source_labels.clone(),
            separator: self.separator.clone().unwrap_or_else(|| ";".into()),
            regex,
            modulus: self.modulus.unwrap_or(0),
            target_label,
            replacement: self.replacement.clone().unwrap_or_else(|| "$1".into()),
            action,
        })
    }
}

/// Applies `rules` in order; `None` when a rule drops the label set. Labels with empty values are removed.
pub fn apply(rules: &[Rule], mut labels: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    for rule in rules {
        let source: Vec<&str> =
            rule.source_labels.iter().map(|name| labels.get(name).map_or("", String::as_str)).collect();
        let value = source.join(&rule.separator);
        match rule.action {
            Action::Replace => {
                if let Some(captures) = rule.regex.captures(&value) {
                    let mut target = String::new();
                    captures.expand(&rule.target_label, &mut target);
                    let mut replaced = String::new();
                    captures.expand(&rule.replacement, &mut replaced);
                    set(&mut labels, target, replaced);
                }
            }
            Action::Keep if !rule.regex.is_match(&value) => return None,
            Action::Drop if rule.regex.is_match(&value) => return None,
            Action::KeepEqual if labels.get(&rule.target_label).map_or("", String::as_str) != value => return None,
            Action::DropEqual if labels.get(&rule.target_label).map_or("", String::as_str) == value => return None,
            Action::HashMod => {
                let digest = md5_prefix(value.as_bytes()) % rule.modulus;
                set(&mut labels, rule.target_label.clone(), digest.to_string());
            }
            Action::LabelMap => {
                let renamed: Vec<(String, String)> = labels
                    .iter()
                    .filter_map(|(name, value)| {
                        let captures = rule.regex.captures(name)?;
                        let mut target = String::new();
                        captures.expand(&rule.replacement, &mut target);
                        Some((target, value.clone()))
                    })
                    .collect();
                for (name, value) in renamed {
                    set(&mut labels, name, value);
                }
            }
            Action::LabelDrop => labels.retain(|name, _| !rule.regex.is_match(name)),
            Action::LabelKeep => labels.retain(|name, _| rule.regex.is_match(name)),
            Action::Lowercase => set(&mut labels, rule.target_label.clone(), value.to_lowercase()),
            Action::Uppercase => set(&mut labels, rule.target_label.clone(), value.to_uppercase()),
            _ => {}
        }
    }
    Some(labels)
}

fn set(labels: &mut BTreeMap<String, String>, name: String, value: String) {
    if name.is_empty() {
        return;
    }
    if value.is_empty() {
        labels.remove(&name);
    } else {
        labels.insert(name, value);
    }
}

/// Prometheus's `hashmod` hash: the MD5 digest's bytes shifted into a `uint64` (Go drops the shifts of the
/// first 8 bytes, 64 bits or more), i.e. the last 8 bytes, big-endian.
fn md5_prefix(data: &[u8]) -> u64 {
    let digest = md5::compute(data);
    u64::from_be_bytes(digest.0[8..16].try_into().expect("an MD5 digest has 16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        serde_yaml::from_str::<RelabelConfig>(yaml).unwrap().compile().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_action() {
        let base = labels(&[("__address__", "10.0.0.7:9100"), ("job", "node"), ("__meta_env", "Prod")]);
        let replace = rule("{source_labels: [__address__], regex: '(.*):\\d+', target_label: host, replacement: '$1'}");
        assert_eq!(apply(&[replace], base.clone()).unwrap()["host"], "10.0.0.7");
        assert!(apply(&[rule("{source_labels: [job], regex: api, action: keep}")], base.clone()).is_none());
        assert!(apply(&[rule("{source_labels: [job], regex: node, action: drop}")], base.clone()).is_none());
        let equal = labels(&[("a", "x"), ("b", "x")]);
        assert!(apply(&[rule("{source_labels: [a], target_label: b, action: keepequal}")], equal.clone()).is_some());
        assert!(apply(&[rule("{source_labels: [a], target_label: b, action: dropequal}")], equal).is_none());
        let hashed = apply(
            &[rule("{source_labels: [__address__], modulus: 4, target_label: shard, action: hashmod}")],
            base.clone(),
        )
        .unwrap();
        assert!(hashed["shard"].parse::<u64>().unwrap() < 4);
        let mapped = apply(&[rule("{regex: '__meta_(.+)', action: labelmap}")], base.clone()).unwrap();
        assert_eq!(mapped["env"], "Prod");
        let dropped = apply(&[rule("{regex: '__meta_.*', action: labeldrop}")], base.clone()).unwrap();
        assert!(!dropped.contains_key("__meta_env"));
        let kept = apply(&[rule("{regex: 'job', action: labelkeep}")], base.clone()).unwrap();
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["job"]);
        let lower = apply(&[rule("{source_labels: [__meta_env], target_label: env, action: lowercase}")], base.clone())
            .unwrap();
        assert_eq!(lower["env"], "prod");
        let upper =
            apply(&[rule("{source_labels: [job], target_label: job, action: uppercase}")], base.clone()).unwrap();
        assert_eq!(upper["job"], "NODE");
        let emptied = apply(&[rule("{source_labels: [missing], target_label: job}")], base).unwrap();
        assert!(!emptied.contains_key("job"), "an empty replacement removes the label");
    }

    #[test]
    fn bad_rules_are_refused_when_loaded() {
        assert!(serde_yaml::from_str::<RelabelConfig>("{action: explode}").unwrap().compile().is_err());
        assert!(
            serde_yaml::from_str::<RelabelConfig>("{action: hashmod, target_label: x}").unwrap().compile().is_err()
        );
        assert!(serde_yaml::from_str::<RelabelConfig>("{regex: '('}").unwrap().compile().is_err());
        assert!(serde_yaml::from_str::<RelabelConfig>("{source_labels: [a]}").unwrap().compile().is_err(), "no target");
    }
}
