//! Scraping Prometheus `/metrics` targets (found by [`crate::discovery`]): the exposition (text 0.0.4 or OpenMetrics,
//! by the response's content type) becomes points with the target's `job` and `instance` and its static
//! labels, and each scrape adds Prometheus's synthetic series: `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and `scrape_series_added`. Without
//! `honor_labels`, scraped labels that clash with target labels are kept as `exported_<name>`. A failed
//! scrape, a timeout or more samples than `sample_limit` give `up` 0 and no samples. Series that vanish,
//! or all of them when a scrape fails, get a staleness marker, as Prometheus writes them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::exposition::{self, Format};
use crate::{Point, STALE_NAN_BITS};

/// The series every scrape adds about itself, in the order [`Scraper::scrape`] writes them.
const SYNTHETIC: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// One scrape target.
#[derive(Debug, Clone)]
pub struct Target {
    /// `job_name`.
    pub job: String,
    /// `host:port`, the `instance` label.
    pub instance: String,
    /// The URL scraped (`scheme://instance/metrics_path`).
    pub url: String,
    /// Labels from the static config.
    pub labels: Vec<(String, String)>,
    /// Whether scraped labels win over target labels.
    pub honor_labels: bool,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// Most samples a scrape may have (0: no limit).
    pub sample_limit: usize,
    /// Largest body accepted.
    pub body_limit: u64,
    /// `metric_relabel_configs`, applied to every scraped sample.
    pub metric_relabel: Vec<crate::relabel::Rule>,
}

/// Scrapes one target repeatedly, remembering its series for `scrape_series_added`.
#[derive(Debug)]
pub struct Scraper {
    target: Target,
    agent: ureq::Agent,
    seen: HashSet<(String, Vec<(String, String)>)>,
}

impl Scraper {
    /// A scraper of `target`.
    pub fn new(target: Target) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(target.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Scraper { target, agent, seen: HashSet::new() }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One scrape: the target's samples (none when it failed) and the synthetic series.
    pub fn scrape(&mut self) -> Vec<Point> {
        let started = Instant::now();
        let samples = match self.fetch() {
            Ok(samples) => Some(samples),
            Err(error) => {
                tracing::debug!(target = %self.target.url, %error, "scrape failed");
                None
            }
        };
        let duration = started.elapsed().as_secs_f64();
        let up = samples.is_some();
        let (scraped, mut points) = samples.unwrap_or_default();
        let kept = points.len();
        let current: HashSet<(String, Vec<(String, String)>)> =
            points.iter().map(|p| (p.name.clone(), p.labels.clone())).collect();
        let added = current.difference(&self.seen).count();
        // Staleness markers: for series gone since the last scrape, and for all of them when it failed.
        let gone: Vec<(String, Vec<(String, String)>)> =
            if up { self.seen.difference(&current).cloned().collect() } else { self.seen.drain().collect() };
        for (name, labels) in gone {
            points.push(Point { name, labels, value: f64::from_bits(STALE_NAN_BITS) });
        }
        if up {
            self.seen = current;
        }
        let target_labels = self.target_labels();
        let synthetic = |name: &str, value: f64| Point { name: name.to_owned(), labels: target_labels.clone(), value };
        let values = [if up { 1.0 } else { 0.0 }, duration, scraped as f64, kept as f64, added as f64];
        for (name, value) in SYNTHETIC.into_iter().zip(values) {
            points.push(synthetic(name, value));
        }
        points
    }

    /// Staleness markers for every series of the target, synthetic ones included: what Prometheus writes
    /// when a target goes away from discovery.
    pub fn stale_all(&mut self) -> Vec<Point> {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut points: Vec<Point> =
            self.seen.drain().map(|(name, labels)| Point { name, labels, value: stale }).collect();
        let target_labels = self.target_labels();
        for name in SYNTHETIC {
            points.push(Point { name: name.to_owned(), labels: target_labels.clone(), value: stale });
        }
        points
    }

    fn target_labels(&self) -> Vec<(String, String)> {
        let mut labels = self.target.labels.clone();
        labels.push(("job".into(), self.target.job.clone()));
        labels.push(("instance".into(), self.target.instance.clone()));
        labels
    }

    /// The samples scraped (before metric relabeling) and the points kept after it.
    fn fetch(&self) -> Result<(usize, Vec<Point>), String> {
        let mut response = self
            .agent
            .get(&self.target.url)
            .header("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
            .call()
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let openmetrics = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/openmetrics-text"));
        let body = response
            .body_mut()
            .with_config()
            .limit(self.target.body_limit)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let format = if openmetrics { Format::OpenMetrics } else { Format::PrometheusText };
        let families = exposition::parse(&body, format).map_err(|e| e.to_string())?;
        let mut scraped = 0;
        let mut points = Vec::new();
        for sample in families.into_iter().flat_map(|family| family.samples) {
            scraped += 1;
            let merged = self.merge(sample.labels);
            if self.target.metric_relabel.is_empty() {
                points.push(Point { name: sample.name, labels: merged, value: sample.value });
                continue;
            }
            let mut labels: std::collections::BTreeMap<String, String> = merged.into_iter().collect();
            labels.insert("__name__".into(), sample.name);
            let Some(mut kept) = crate::relabel::apply(&self.target.metric_relabel, labels) else { continue };
            let Some(name) = kept.remove("__name__") else { continue };
            points.push(Point { name, labels: kept.into_iter().collect(), value: sample.value });
        }
        if self.target.sample_limit > 0 && points.len() > self.target.sample_limit {
            return Err(format!("{} samples exceed the sample_limit of {}", points.len(), self.target.sample_limit));
        }
        Ok((scraped, points))
    }

    /// Target labels over scraped ones, clashing scraped labels kept as `exported_<name>` (or the scraped
    /// ones winning with `honor_labels`).
    fn merge(&self, scraped: Vec<(String, String)>) -> Vec<(String, String)> {
        let target = self.target_labels();
        let mut labels: Vec<(String, String)> = Vec::with_capacity(scraped.len() + target.len());
        for (name, value) in scraped {
            let clashes = target.iter().any(|(t, _)| *t == name);
            match (clashes, self.target.honor_labels) {
                (true, false) => labels.push((format!("exported_{name}"), value)),
                _ => labels.push((name, value)),
            }
        }
        for (name, value) in target {
            if !labels.iter().any(|(l, _)| *l == name) {
                labels.push((name, value));
            }
        }
        labels.sort();
        labels
    }
}

#[cfg(test)]
mod tests_support {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serves `body` with `content_type` once per connection, for `count` connections.
    pub(super) fn serve(body: &'static str, content_type: &'static str, count: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(count) {
                let mut stream = stream.unwrap();
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        address.to_string()
    }

    pub(super) fn target(instance: &str) -> Target {
        Target {
            job: "app".into(),
            instance: instance.into(),
            url: format!("http://{instance}/metrics"),
            labels: vec![("team".into(), "core".into())],
            honor_labels: false,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            sample_limit: 0,
            body_limit: 1 << 20,
            metric_relabel: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::tests_support::*;
    use super::*;

    fn value(points: &[Point], name: &str) -> f64 {
        points.iter().find(|p| p.name == name).unwrap().value
    }

    #[test]
    fn a_scrape_carries_target_labels_and_the_scrape_contract() {
        let body = "# TYPE requests_total counter\nrequests_total{job=\"inner\",code=\"200\"} 7\nqueue 3\n";
        let instance = serve(body, "text/plain; version=0.0.4", 2);
        let mut scraper = Scraper::new(target(&instance));
        let points = scraper.scrape();
        let requests = points.iter().find(|p| p.name == "requests_total").unwrap();
        let expected = [
            ("code", "200"),
            ("exported_job", "inner"),
            ("instance", instance.as_str()),
            ("job", "app"),
            ("team", "core"),
        ];
        assert_eq!(requests.labels, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!((value(&points, "up"), value(&points, "scrape_samples_scraped")), (1.0, 2.0));
        assert_eq!(value(&points, "scrape_series_added"), 2.0);
        let again = scraper.scrape();
        assert_eq!(value(&again, "scrape_series_added"), 0.0, "nothing new the second time");
    }

    #[test]
    fn vanished_series_and_failed_scrapes_get_staleness_markers() {
        let stale = |points: &[Point]| -> Vec<String> {
            let mut names: Vec<String> =
                points.iter().filter(|p| p.value.to_bits() == STALE_NAN_BITS).map(|p| p.name.clone()).collect();
            names.sort();
            names
        };
        let first = serve("a 1\nb 2\n", "text/plain", 1);
        let mut scraper = Scraper::new(target(&first));
        assert!(stale(&scraper.scrape()).is_empty());
        let second = serve("a 1\n", "text/plain", 1);
        scraper.target.url = format!("http://{second}/metrics");
        assert_eq!(stale(&scraper.scrape()), ["b"], "b vanished");
        scraper.target.url = "http://127.0.0.1:9/metrics".into();
        assert_eq!(stale(&scraper.scrape()), ["a"], "a failed scrape marks everything left");
    }

    #[test]
    fn failures_and_limits_give_up_zero_and_no_samples() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let points = Scraper::new(target(&closed)).scrape();
        assert_eq!(value(&points, "up"), 0.0);
        assert_eq!(points.len(), 5, "only the synthetic series");
        let instance = serve("a 1\nb 2\nc 3\n", "text/plain", 1);
        let points = Scraper::new(Target { sample_limit: 2, ..target(&instance) }).scrape();
        assert_eq!((value(&points, "up"), points.len()), (0.0, 5));
    }
}

#[cfg(test)]
mod relabel_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn metric_relabeling_drops_and_rewrites_samples() {
        let instance = serve("keep_me 1\ndrop_me 2\n", "text/plain", 1);
        let rules: Vec<crate::relabel::Rule> = [
            "{source_labels: [__name__], regex: drop_.*, action: drop}",
            "{source_labels: [__name__], regex: '(.*)', target_label: __name__, replacement: 'app_$1'}",
        ]
        .iter()
        .map(|yaml| serde_yaml::from_str::<crate::relabel::RelabelConfig>(yaml).unwrap().compile().unwrap())
        .collect();
        let points = Scraper::new(Target { metric_relabel: rules, ..target(&instance) }).scrape();
        assert!(points.iter().any(|p| p.name == "app_keep_me"));
        assert!(!points.iter().any(|p| p.name.contains("drop_me")));
        let value = |name: &str| points.iter().find(|p| p.name == name).unwrap().value;
        assert_eq!((value("scrape_samples_scraped"), value("scrape_samples_post_metric_relabeling")), (2.0, 1.0));
    }
}
