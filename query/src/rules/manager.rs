//! Runs the rule groups: each on its own task at Prometheus's aligned evaluation times, evaluation on the
//! blocking pool, alerts handed to the sinks; reloads keep alert state and keep the old rules when the new
//! files are invalid.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vigil_tsdb::{Appender, Queryable};

use super::notify::{AlertSink, OutgoingAlert};
use super::{EvalContext, GroupRunner, Language, RuleGroup, RulesError, load_files, load_files_as};
use crate::promql::Engine;

/// What the rule manager is configured with.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// `rule_files:` patterns (globs) and `--rule-file` paths.
    pub patterns: Vec<String>,
    /// Log rule files (LogQL expressions): `log_rule_files:` patterns and `--log-rule-file` paths.
    pub log_patterns: Vec<String>,
    /// Interval of groups that set none (`global.evaluation_interval`).
    pub default_interval: Duration,
    /// How often a firing alert is re-sent.
    pub resend_delay: Duration,
    /// External labels and URL.
    pub context: EvalContext,
}

/// The running rule groups.
#[derive(Clone)]
pub struct RuleManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: RulesConfig,
    storage: Arc<dyn Queryable>,
    appender: Arc<dyn Appender>,
    engine: Arc<Engine>,
    sinks: Vec<Arc<dyn AlertSink>>,
    groups: Mutex<Vec<Arc<Mutex<GroupRunner>>>>,
    generation: watch::Sender<u64>,
}

impl RuleManager {
    /// A manager with no groups yet; [`RuleManager::load`] reads the files.
    pub fn new(
        config: RulesConfig,
        storage: Arc<dyn Queryable>,
        appender: Arc<dyn Appender>,
        sinks: Vec<Arc<dyn AlertSink>>,
    ) -> Self {
        let (generation, _) = watch::channel(0);
        let engine = Arc::new(Engine::default());
        let inner = Inner { config, storage, appender, engine, sinks, groups: Mutex::new(Vec::new()), generation };
        RuleManager { inner: Arc::new(inner) }
    }

    /// The rule files (PromQL, then LogQL) the patterns name now.
    pub fn files(&self) -> Result<Vec<PathBuf>, RulesError> {
        let mut files = expand(&self.inner.config.patterns)?;
        files.extend(expand(&self.inner.config.log_patterns)?);
        Ok(files)
    }

    /// Reads the rule files and swaps them in, keeping the alerts of groups that stay. On an error nothing
    /// changes. `restore` (at start-up) restores `for` state of new groups from storage.
    pub fn load(&self, restore: bool) -> Result<usize, RulesError> {
        let default_ms = self.inner.config.default_interval.as_millis() as i64;
        let mut groups: Vec<RuleGroup> = load_files(&expand(&self.inner.config.patterns)?, default_ms)?;
        groups.extend(load_files_as(&expand(&self.inner.config.log_patterns)?, default_ms, Language::LogQL)?);
        let mut current = self.inner.groups.lock().expect("groups lock");
        let old: Vec<GroupRunner> = current.iter().map(|g| g.lock().expect("group lock").clone()).collect();
        let mut runners = Vec::with_capacity(groups.len());
        for group in groups {
            let mut runner = GroupRunner::new(group, restore);
            if let Some(previous) = old.iter().find(|o| o.key() == runner.key()) {
                runner.copy_state_from(previous);
            }
            runners.push(Arc::new(Mutex::new(runner)));
        }
        let count = runners.iter().map(|r| r.lock().expect("group lock").group.rules.len()).sum();
        *current = runners;
        drop(current);
        self.inner.generation.send_modify(|g| *g += 1);
        Ok(count)
    }

    /// Re-reads the files (SIGHUP, `POST /-/reload`); the tasks of the old groups end, new ones start.
    pub fn reload(&self, stop: &watch::Receiver<bool>) -> Result<usize, RulesError> {
        let count = self.load(false)?;
        self.start(stop.clone());
        Ok(count)
    }

    /// Spawns one task per current group; they run until `stop` or the next (re)load.
    pub fn start(&self, stop: watch::Receiver<bool>) {
        let generation = *self.inner.generation.borrow();
        for group in self.inner.groups.lock().expect("groups lock").iter() {
            let (inner, group, stop) = (self.inner.clone(), group.clone(), stop.clone());
            tokio::spawn(run_group(inner, group, generation, stop));
        }
    }

    /// A copy of every group's state, for the APIs.
    pub fn snapshot(&self) -> Vec<GroupRunner> {
        self.inner.groups.lock().expect("groups lock").iter().map(|g| g.lock().expect("group lock").clone()).collect()
    }
}

async fn run_group(
    inner: Arc<Inner>,
    group: Arc<Mutex<GroupRunner>>,
    generation: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut reloads = inner.generation.subscribe();
    let interval_ms = group.lock().expect("group lock").group.interval_ms;
    loop {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let next = group.lock().expect("group lock").eval_timestamp(now_ms) + interval_ms;
        let wait = Duration::from_millis((next - now_ms).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
            _ = reloads.changed() => {}
        }
        if *stop.borrow() || *reloads.borrow() != generation {
            return;
        }
        let (inner_for_eval, group_for_eval) = (inner.clone(), group.clone());
        let evaluated = tokio::task::spawn_blocking(move || {
            let mut runner = group_for_eval.lock().expect("group lock");
            runner.evaluate(
                &inner_for_eval.engine,
                inner_for_eval.storage.as_ref(),
                inner_for_eval.appender.as_ref(),
                next,
                &inner_for_eval.config.context,
            );
            let resend_ms = inner_for_eval.config.resend_delay.as_millis() as i64;
            let context = &inner_for_eval.config.context;
            let outgoing: Vec<OutgoingAlert> = runner
                .alerts_to_send(next, resend_ms)
                .iter()
                .map(|(expr, alert)| OutgoingAlert::from_alert(alert, expr, context))
                .collect();
            let took = runner.last_evaluation.map_or(0.0, |(_, seconds)| seconds);
            (outgoing, took, runner.group.name.clone())
        })
        .await;
        let Ok((outgoing, took, name)) = evaluated else { continue };
        metrics::histogram!("vigil_rule_group_duration_seconds").record(took);
        if took * 1000.0 > interval_ms as f64 {
            metrics::counter!("vigil_rule_group_iterations_missed_total").increment(1);
            tracing::warn!(group = %name, took_s = took, "rule group evaluation took longer than its interval");
        }
        for sink in &inner.sinks {
            sink.send(&outgoing);
        }
    }
}

/// The files `patterns` name now, sorted; a pattern matching nothing is not an error.
fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, RulesError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let paths =
            glob::glob(pattern).map_err(|e| RulesError::Pattern { pattern: pattern.clone(), reason: e.to_string() })?;
        files.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
    }
    files.sort();
    files.dedup();
    Ok(files)
}
