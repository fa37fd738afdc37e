//! The Kubernetes manifests parse, reference each other correctly, and call the binary with flags it has.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn manifests_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes"))
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(manifests_dir().join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn help_of(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil")).args([subcommand, "--help"]).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn workload(file: &str, kind: &str) -> Value {
    documents(file).into_iter().find(|doc| doc["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in {file}"))
}

#[test]
fn kustomization_lists_existing_files_that_parse() {
    let kustomization = &documents("kustomization.yaml")[0];
    let resources = kustomization["resources"].as_sequence().unwrap();
    assert!(resources.len() >= 3);
    for resource in resources {
        let file = resource.as_str().unwrap();
        for doc in documents(file) {
            assert!(doc["apiVersion"].is_string() && doc["kind"].is_string(), "{file}: {doc:?}");
        }
    }
}

#[test]
fn container_args_are_flags_the_binary_accepts() {
    for (file, kind) in [("server-statefulset.yaml", "StatefulSet"), ("agent-daemonset.yaml", "DaemonSet")] {
        let spec = workload(file, kind);
        let container = &spec["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let help = help_of(args[0]);
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap();
            assert!(help.contains(&format!("{flag} ")), "{file}: {flag} is not a flag of `vigil {}`", args[0]);
        }
    }
}

#[test]
fn server_has_probes_storage_and_ports_that_match_its_service() {
    let statefulset = workload("server-statefulset.yaml", "StatefulSet");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/-/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/-/healthy");
    let claim = &statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"];
    let mount = &container["volumeMounts"][0];
    assert_eq!(&mount["name"], claim);
    let data_dir_arg = format!("--data-dir={}", mount["mountPath"].as_str().unwrap());
    assert!(container["args"].as_sequence().unwrap().iter().any(|a| a.as_str() == Some(&data_dir_arg)));
    let service = workload("server-statefulset.yaml", "Service");
    let port_names: Vec<&str> =
        container["ports"].as_sequence().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for port in service["spec"]["ports"].as_sequence().unwrap() {
        assert!(port_names.contains(&port["targetPort"].as_str().unwrap()), "{port:?}");
    }
    assert_eq!(service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]);
}

#[test]
fn agent_mounts_the_host_read_only_under_its_root() {
    let daemonset = workload("agent-daemonset.yaml", "DaemonSet");
    // The allocator settings that keep the agent's resident memory low (bench/agent_overhead.py).
    let env = &daemonset["spec"]["template"]["spec"]["containers"][0]["env"];
    for name in ["MIMALLOC_PURGE_DELAY", "MIMALLOC_ARENA_EAGER_COMMIT"] {
        let value = env.as_sequence().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(value, Some(Value::String("0".into())), "{name} in the agent's env");
    }
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = container["args"].as_sequence().unwrap();
    assert!(args.iter().any(|a| a.as_str() == Some("--root=/host")));
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let path = mount["mountPath"].as_str().unwrap();
        if path.starts_with("/host/") {
            assert_eq!(mount["readOnly"], true, "{path} must be read-only");
        }
    }
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
}

#[test]
fn the_agent_reads_its_config_map_and_may_use_its_token() {
    let docs = kustomized();
    let agent = find(&docs, "DaemonSet", "vigil-agent");
    let pod = &agent["spec"]["template"]["spec"];
    assert_ne!(pod["automountServiceAccountToken"], false, "pod discovery needs the service account token");
    let config = arg_value(agent, "--config");
    let (dir, file) = config.rsplit_once('/').unwrap();
    let mount = pod["containers"][0]["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["mountPath"] == dir);
    let volume_name = mount.expect("the config directory is mounted")["name"].as_str().unwrap();
    let volume = pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == volume_name).unwrap();
    let map = find(&docs, "ConfigMap", volume["configMap"]["name"].as_str().unwrap());
    assert_eq!(map["metadata"]["namespace"], agent["metadata"]["namespace"]);
    let text = map["data"][file].as_str().expect("the config file is in the ConfigMap");
    let parsed: Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(parsed["agent"]["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"], "pod");
}

/// Every document of the kustomization, as real `kubectl kustomize` builds it.
fn kustomized() -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize", manifests_dir().to_str().unwrap()])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl runs");
    assert!(output.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strs(value: &Value) -> Vec<&str> {
    value.as_sequence().map_or_else(Vec::new, |items| items.iter().filter_map(Value::as_str).collect())
}

/// The container port a Service port reaches, by number or by the container port's name.
fn target_container_port(workload: &Value, service_port: &Value) -> u64 {
    let ports = &workload["spec"]["template"]["spec"]["containers"][0]["ports"];
    let target = &service_port["targetPort"];
    if let Some(number) = target.as_u64() {
        return number;
    }
    let named = ports.as_sequence().unwrap().iter().find(|p| p["name"] == *target);
    named.unwrap_or_else(|| panic!("no container port named {target:?}"))["containerPort"].as_u64().unwrap()
}

fn arg_value<'a>(workload: &'a Value, flag: &str) -> &'a str {
    let args = strs(&workload["spec"]["template"]["spec"]["containers"][0]["args"]);
    let prefix = format!("{flag}=");
    args.into_iter().find_map(|a| a.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no {flag}"))
}

#[test]
fn the_api_service_reaches_the_servers_tls_listener() {
    let docs = kustomized();
    let api_service = find(&docs, "APIService", "v1beta1.metrics.k8s.io");
    assert_eq!(
        (&api_service["spec"]["group"], &api_service["spec"]["version"]),
        (&"metrics.k8s.io".into(), &"v1beta1".into())
    );
    let reference = &api_service["spec"]["service"];
    let service = find(&docs, "Service", reference["name"].as_str().unwrap());
    assert_eq!(service["metadata"]["namespace"], reference["namespace"]);
    let port = service["spec"]["ports"].as_sequence().unwrap().iter().find(|p| p["port"] == reference["port"]).unwrap();
    let server = find(&docs, "StatefulSet", "vigil");
    assert_eq!(service["spec"]["selector"], server["spec"]["template"]["metadata"]["labels"]);
    let https_addr = arg_value(server, "--https-addr");
    assert_eq!(https_addr.rsplit(':').next().unwrap().parse::<u64>().unwrap(), target_container_port(server, port));
}

#[test]
fn the_agent_ships_to_a_port_of_the_servers_service() {
    let docs = kustomized();
    let agent = find(&docs, "DaemonSet", "vigil-agent");
    let url = arg_value(agent, "--server");
    let authority = url.split("://").nth(1).unwrap().trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').unwrap();
    let mut host_parts = host.split('.');
    let (service_name, namespace) = (host_parts.next().unwrap(), host_parts.next().unwrap());
    let service = find(&docs, "Service", service_name);
    assert_eq!(service["metadata"]["namespace"], namespace);
    let service_port =
        service["spec"]["ports"].as_sequence().unwrap().iter().find(|p| p["port"].as_u64() == port.parse().ok());
    let server = find(&docs, "StatefulSet", "vigil");
    let grpc_addr = arg_value(server, "--otlp-grpc-addr");
    let grpc_port: u64 = grpc_addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(target_container_port(server, service_port.expect("the agent's port is on the Service")), grpc_port);
}

#[test]
fn service_accounts_and_role_bindings_resolve() {
    let docs = kustomized();
    for workload in docs.iter().filter(|d| d["kind"] == "StatefulSet" || d["kind"] == "DaemonSet") {
        let account = workload["spec"]["template"]["spec"]["serviceAccountName"].as_str().expect("a service account");
        let found = find(&docs, "ServiceAccount", account);
        assert_eq!(found["metadata"]["namespace"], workload["metadata"]["namespace"]);
    }
    for binding in docs.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        find(&docs, "ClusterRole", binding["roleRef"]["name"].as_str().unwrap());
        for subject in binding["subjects"].as_sequence().unwrap() {
            let account = find(&docs, "ServiceAccount", subject["name"].as_str().unwrap());
            assert_eq!(account["metadata"]["namespace"], subject["namespace"]);
        }
    }
    // The server reads nodes and pods; viewers may read their metrics; the agent lists pods.
    let grants = |role: &str, group: &str| -> Vec<(String, Vec<String>)> {
        let rules = find(&docs, "ClusterRole", role)["rules"].as_sequence().unwrap().clone();
        rules
            .iter()
            .filter(|r| strs(&r["apiGroups"]).contains(&group))
            .flat_map(|r| {
                strs(&r["resources"])
                    .into_iter()
                    .map(|res| (res.to_owned(), strs(&r["verbs"]).iter().map(|v| v.to_string()).collect()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let roles = [
        ("vigil:server", "", &["nodes", "pods"][..]),
        ("vigil:aggregated-metrics-reader", "metrics.k8s.io", &["nodes", "pods"][..]),
        ("vigil:agent", "", &["pods"][..]),
    ];
    for (role, group, resources) in roles {
        let granted = grants(role, group);
        for resource in resources {
            let verbs = &granted.iter().find(|(r, _)| r == resource).unwrap_or_else(|| panic!("{role}: {resource}")).1;
            assert!(verbs.contains(&"get".to_owned()) && verbs.contains(&"list".to_owned()), "{role}: {resource}");
        }
    }
    let reader = find(&docs, "ClusterRole", "vigil:aggregated-metrics-reader");
    assert_eq!(reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"], "true");
}

#[test]
fn the_agent_mounts_every_runtime_state_directory_it_reads() {
    let agent = workload("agent-daemonset.yaml", "DaemonSet");
    let mounts: Vec<&str> = agent["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    // What the agent reads relative to --root: cgroups, /proc, pod logs, and the runtimes' container state.
    let read = [
        "proc/stat",
        "sys/fs/cgroup",
        "var/log/pods",
        "run/containerd/io.containerd.runtime.v2.task",
        "run/containers/storage",
        "var/lib/docker/containers",
    ];
    for path in read {
        let on_host = format!("/host/{path}");
        assert!(
            mounts.iter().any(|m| on_host.starts_with(&format!("{m}/")) || on_host == *m),
            "{on_host} is not mounted"
        );
    }
}
