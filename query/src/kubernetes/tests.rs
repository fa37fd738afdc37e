use tower::ServiceExt;
use vigil_tsdb::{Appender, Db, DbOptions, Labels, Sample, SeriesSamples};

use super::*;

#[test]
fn quantities_and_durations_use_kubernetes_and_go_forms() {
    assert_eq!(binary_quantity(1_658_994_688), "1620112Ki");
    assert_eq!(binary_quantity(12 * 1024 * 1024), "12Mi");
    assert_eq!(binary_quantity(1_000_001), "1000001");
    assert_eq!(binary_quantity(0), "0");
    assert_eq!(go_duration(15_020), "15.02s");
    assert_eq!(go_duration(10_000), "10s");
    assert_eq!(go_duration(500), "500ms");
    assert_eq!(go_duration(60_500), "1m0.5s");
    assert_eq!(go_duration(75_000), "1m15s");
}

#[test]
fn selectors_filter_by_field_and_label() {
    let params = |field: &str, label: &str| ListParams { field_selector: field.into(), label_selector: label.into() };
    let labels = BTreeMap::from([("kubernetes.io/hostname", "node-a"), ("tier", "front")]);
    let passes = |p: ListParams| p.matches(|key| labels.get(key).copied(), "node-a", "");
    assert!(passes(params("metadata.name=node-a", "")));
    assert!(!passes(params("metadata.name!=node-a", "")));
    assert!(passes(params("", "kubernetes.io/hostname=node-a")));
    assert!(!passes(params("", "app=web")));
    assert!(passes(params("", "app!=web")), "a missing key passes !=");
    assert!(passes(params("", "kubernetes.io/hostname")), "existence test");
    assert!(!passes(params("", "!tier")) && passes(params("", "!app")));
    assert!(passes(params("", "tier in (back, front),kubernetes.io/hostname==node-a")));
    assert!(!passes(params("", "tier notin (front)")) && passes(params("", "app notin (web)")));
    assert!(!passes(params("", "tier in (back),kubernetes.io/hostname")));
}

#[test]
fn selectors_split_at_top_level_commas() {
    let parsed: Vec<Requirement> = requirements("a in (x, y),b!=c, !d").collect();
    assert_eq!(
        parsed,
        [
            Requirement { key: "a", op: SelectorOp::In(vec!["x", "y"]) },
            Requirement { key: "b", op: SelectorOp::NotEquals("c") },
            Requirement { key: "d", op: SelectorOp::NotExists },
        ]
    );
    assert_eq!(pod_label_name("app.kubernetes.io/name"), "label_app_kubernetes_io_name");
}

fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::new(pairs.iter().copied()).unwrap(),
        samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
    }
}

/// Two collections 15 s apart: node-a's root used 3 cores; web-0 has two containers.
fn storage() -> Arc<Db> {
    let db = Arc::new(Db::in_memory(DbOptions::default()));
    let now = Utc::now().timestamp_millis();
    let (t1, t2) = (now - 20_000, now - 5_000);
    let root = [("id", "/"), ("node", "node-a")];
    let with = |name: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut pairs = vec![("__name__", name)];
        pairs.extend_from_slice(extra);
        pairs
    };
    let container = |c: &'static str| [("namespace", "shop"), ("pod", "web-0"), ("container", c), ("node", "node-a")];
    db.append(&[
        series(&with("container_cpu_usage_seconds_total", &root), &[(t1, 100.0), (t2, 145.0)]),
        series(&with("container_memory_working_set_bytes", &root), &[(t1, 1.0), (t2, 1_658_994_688.0)]),
        series(&with("machine_cpu_cores", &[("node", "node-a")]), &[(t2, 8.0)]),
        series(&with("machine_memory_bytes", &[("node", "node-a")]), &[(t2, 17_179_869_184.0)]),
        series(&with("container_cpu_usage_seconds_total", &container("app")), &[(t1, 10.0), (t2, 10.15)]),
        series(&with("container_memory_working_set_bytes", &container("app")), &[(t2, 8_388_608.0)]),
        series(&with("container_cpu_usage_seconds_total", &container("sidecar")), &[(t1, 1.0), (t2, 1.015)]),
        series(&with("container_memory_working_set_bytes", &container("sidecar")), &[(t2, 4_194_304.0)]),
        series(
            &with(
                "kube_pod_labels",
                &[("namespace", "shop"), ("pod", "web-0"), ("label_app_kubernetes_io_name", "web")],
            ),
            &[(t2, 1.0)],
        ),
        // A pod whose only container has one CPU sample yet: no usage, left out.
        series(
            &with("container_cpu_usage_seconds_total", &[("namespace", "shop"), ("pod", "new-1"), ("container", "c")]),
            &[(t2, 1.0)],
        ),
        series(
            &with("container_memory_working_set_bytes", &[("namespace", "shop"), ("pod", "new-1"), ("container", "c")]),
            &[(t2, 1.0)],
        ),
    ])
    .unwrap();
    db
}

async fn get_json(path: &str) -> (StatusCode, Value) {
    let app = routes(storage());
    let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn node_metrics_are_rates_between_the_last_two_samples() {
    let (status, body) = get_json("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "NodeMetricsList");
    let node = &body["items"][0];
    assert_eq!(node["metadata"]["name"], "node-a");
    assert_eq!(node["usage"]["cpu"], "3000000000n");
    assert_eq!(node["usage"]["memory"], "1620112Ki");
    assert_eq!(node["window"], "15s");
    let (status, one) = get_json("/apis/metrics.k8s.io/v1beta1/nodes/node-a").await;
    assert_eq!((status, one["kind"].as_str()), (StatusCode::OK, Some("NodeMetrics")));
    let (status, missing) = get_json("/apis/metrics.k8s.io/v1beta1/nodes/node-z").await;
    assert_eq!((status, missing["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
}

#[tokio::test]
async fn pod_metrics_list_each_container_and_skip_incomplete_pods() {
    let (status, body) = get_json("/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods").await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    let containers = &items[0]["containers"];
    assert_eq!(containers[0]["name"], "app");
    assert_eq!(containers[0]["usage"]["cpu"], "10000000n");
    assert_eq!(containers[0]["usage"]["memory"], "8Mi");
    assert_eq!(containers[1]["usage"]["cpu"], "1000000n");
    let (_, all) = get_json("/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.name%3Dweb-0").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let selected = |selector: &'static str| async move {
        let path = format!("/apis/metrics.k8s.io/v1beta1/pods?labelSelector={selector}");
        get_json(&path).await.1["items"].as_array().unwrap().len()
    };
    assert_eq!(selected("app.kubernetes.io%2Fname%3Dweb").await, 1, "kube_pod_labels gives the pod's labels");
    assert_eq!(selected("app.kubernetes.io%2Fname%3Dapi").await, 0);
    assert_eq!(selected("app.kubernetes.io%2Fname%20notin%20(api)").await, 1);
    let (_, other) = get_json("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods").await;
    assert_eq!(other["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn nodes_carry_capacity_and_discovery_names_the_group() {
    let (_, nodes) = get_json("/api/v1/nodes").await;
    let status = &nodes["items"][0]["status"];
    assert_eq!(status["allocatable"]["cpu"], "8");
    assert_eq!(status["capacity"]["memory"], "16Gi");
    let (_, groups) = get_json("/apis").await;
    assert_eq!(groups["groups"][0]["name"], "metrics.k8s.io");
    let (_, resources) = get_json("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(resources["resources"][1]["kind"], "PodMetrics");
}
