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
