//! Scrape target discovery: a scrape job's targets from its `static_configs`, `file_sd_configs`
//! (Prometheus's file format: a JSON or YAML list of `{targets: [...], labels: {...}}` groups, each
//! target labelled `__meta_filepath`) and `kubernetes_sd_configs` ([`crate::kubernetes`]), run through
//! `relabel_configs` as Prometheus runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::AgentError;
use crate::relabel::{self, Rule};
use crate::scrape::Target;

/// A group of targets sharing labels, as in `static_configs` and file discovery files.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetGroup {
    /// `host:port` addresses.
    pub targets: Vec<String>,
    /// Labels of every target in the group.
    pub labels: BTreeMap<String, String>,
}

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSd {
    /// Paths or globs (`targets/*.json`) of the files.
    pub files: Vec<String>,
    /// How often the files are read again.
    pub refresh_interval: Duration,
}

/// Prometheus's default `refresh_interval` for file discovery.
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(300);

/// A scrape job: how to scrape, and where its targets come from.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// `job_name`.
    pub job: String,
    /// `scrape_interval`.
    pub interval: Duration,
    /// `scrape_timeout` (at most the interval).
    pub timeout: Duration,
    /// `scheme`.
    pub scheme: String,
    /// `metrics_path`.
    pub metrics_path: String,
    /// `honor_labels`.
    pub honor_labels: bool,
    /// `sample_limit` (0: none).
    pub sample_limit: usize,
    /// `body_size_limit` in bytes.
    pub body_limit: u64,
    /// `relabel_configs`, applied to each target.
    pub relabel: Vec<Rule>,
    /// `metric_relabel_configs`, applied to each sample.
    pub metric_relabel: Vec<Rule>,
    /// `static_configs`.
    pub static_groups: Vec<TargetGroup>,
    /// `file_sd_configs`.
    pub file_sd: Vec<FileSd>,
    /// `kubernetes_sd_configs` (`role: pod`).
    pub kubernetes_sd: Vec<crate::kubernetes::KubernetesSd>,
}

/// Reads one discovery file: JSON, or YAML when its name ends in `.yml` or `.yaml`.
pub fn read_target_file(path: &Path) -> Result<Vec<TargetGroup>, AgentError> {
    let text = std::fs::read(path).map_err(|source| AgentError::Read { path: path.to_owned(), source })?;
    let yaml = path.extension().is_some_and(|e| e == "yml" || e == "yaml");
    let parsed = if yaml {
        serde_yaml::from_slice::<Option<Vec<TargetGroup>>>(&text)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Vec<TargetGroup>>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|reason| AgentError::Format { path: path.to_owned(), reason })
}

/// The files a set of patterns names now, sorted.
fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = patterns
        .iter()
        .flat_map(|pattern| match glob::glob(pattern) {
            Ok(paths) => paths.flatten().collect(),
            Err(error) => {
                tracing::warn!(%pattern, %error, "invalid file_sd_configs pattern");
                Vec::new()
            }
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

impl ScrapeJob {
    /// The shortest refresh interval of its file and Kubernetes discovery, if it has any.
    pub fn refresh_interval(&self) -> Option<Duration> {
        let files = self.file_sd.iter().map(|f| f.refresh_interval);
        files.chain(self.kubernetes_sd.iter().map(|k| k.refresh_interval)).min()
    }

    /// Every target group now: the static ones, then each discovery file's (labelled `__meta_filepath`),
    /// then the pods'. A file that cannot be read or parsed is skipped and reported in the errors; its
    /// targets are dropped until it is fixed, as Prometheus keeps no stale view of a broken file either.
    /// When the API server cannot be asked, the pods listed last are kept (and the error reported).
    pub fn groups(&self) -> (Vec<TargetGroup>, Vec<AgentError>) {
        let mut groups = self.static_groups.clone();
        let mut errors = Vec::new();
        for path in self.file_sd.iter().flat_map(|sd| expand(&sd.files)) {
            match read_target_file(&path) {
                Ok(found) => groups.extend(found.into_iter().map(|mut group| {
                    group.labels.insert("__meta_filepath".into(), path.display().to_string());
                    group
                })),
                Err(error) => errors.push(error),
            }
        }
        for kubernetes in &self.kubernetes_sd {
            let (found, error) = kubernetes.groups();
            groups.extend(found);
            errors.extend(error);
        }
        (groups, errors)
    }

    /// The targets of `groups` after relabeling; `__`-prefixed labels are dropped afterwards.
    pub fn targets(&self, groups: &[TargetGroup]) -> Vec<Target> {
        let mut targets = Vec::new();
        for group in groups {
            for address in &group.targets {
                if let Some(target) = self.target(address, &group.labels) {
                    targets.push(target);
                }
            }
        }
        targets
    }

    fn target(&self, address: &str, group_labels: &BTreeMap<String, String>) -> Option<Target> {
        let mut labels = group_labels.clone();
        labels.insert("__address__".into(), address.to_owned());
        labels.insert("__scheme__".into(), self.scheme.clone());
        labels.insert("__metrics_path__".into(), self.metrics_path.clone());
        labels.insert("job".into(), self.job.clone());
        let mut labels = relabel::apply(&self.relabel, labels)?;
        let address = labels.get("__address__").cloned().unwrap_or_else(|| address.to_owned());
        let scheme = labels.get("__scheme__").cloned().unwrap_or_else(|| self.scheme.clone());
        let path = labels.get("__metrics_path__").cloned().unwrap_or_else(|| self.metrics_path.clone());
        let url = format!("{scheme}://{address}{path}");
        let instance = labels.remove("instance").unwrap_or_else(|| address.clone());
        let job = labels.remove("job").unwrap_or_else(|| self.job.clone());
        labels.retain(|name, _| !name.starts_with("__"));
        Some(Target {
            job,
            instance,
            url,
            labels: labels.into_iter().collect(),
            honor_labels: self.honor_labels,
            interval: self.interval,
            timeout: self.timeout.min(self.interval),
            sample_limit: self.sample_limit,
            body_limit: self.body_limit,
            metric_relabel: self.metric_relabel.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(file_sd: Vec<FileSd>, relabel: Vec<Rule>) -> ScrapeJob {
        ScrapeJob {
            job: "files".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            scheme: "http".into(),
            metrics_path: "/metrics".into(),
            honor_labels: false,
            sample_limit: 0,
            body_limit: 1 << 20,
            relabel,
            metric_relabel: Vec::new(),
            static_groups: vec![TargetGroup { targets: vec!["10.0.0.9:80".into()], labels: BTreeMap::new() }],
            file_sd,
            kubernetes_sd: Vec::new(),
        }
    }

    #[test]
    fn json_and_yaml_files_add_groups_labelled_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"[{"targets": ["10.0.0.1:9100", "10.0.0.2:9100"], "labels": {"env": "prod"}}]"#;
        std::fs::write(dir.path().join("a.json"), json).unwrap();
        std::fs::write(dir.path().join("b.yml"), "- targets: ['10.0.0.3:8080']\n").unwrap();
        std::fs::write(dir.path().join("broken.json"), "[{\"targets\": 3}]").unwrap();
        let patterns = vec![format!("{}/*.json", dir.path().display()), format!("{}/*.yml", dir.path().display())];
        let keep_path = crate::relabel::RelabelConfig {
            source_labels: vec!["__meta_filepath".into()],
            regex: Some(".*/(.*)".into()),
            target_label: Some("file".into()),
            ..Default::default()
        };
        let sd = FileSd { files: patterns, refresh_interval: Duration::from_secs(1) };
        let job = job(vec![sd], vec![keep_path.compile().unwrap()]);
        let (groups, errors) = job.groups();
        assert_eq!(errors.len(), 1, "the broken file is reported");
        assert!(errors[0].to_string().contains("broken.json"), "{}", errors[0]);
        let targets = job.targets(&groups);
        let seen: Vec<(&str, Vec<(String, String)>)> =
            targets.iter().map(|t| (t.url.as_str(), t.labels.clone())).collect();
        let label =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            seen,
            [
                ("http://10.0.0.9:80/metrics", label(&[])),
                ("http://10.0.0.1:9100/metrics", label(&[("env", "prod"), ("file", "a.json")])),
                ("http://10.0.0.2:9100/metrics", label(&[("env", "prod"), ("file", "a.json")])),
                ("http://10.0.0.3:8080/metrics", label(&[("file", "b.yml")])),
            ]
        );
        assert_eq!(targets[0].timeout, Duration::from_secs(10), "the timeout is at most the interval");
        assert_eq!(job.refresh_interval(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn an_empty_yaml_file_is_no_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.yaml");
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_target_file(&path).unwrap(), Vec::new());
    }
}
