//! The deployment files in `deploy/` (issue 17): the Kubernetes Indexed Job is parsed as
//! YAML (python3-yaml, as kubectl would read it) and checked for what a move over N
//! nodes needs; the systemd template passes `systemd-analyze verify` in a root that
//! holds it, the real barge binary and the host's unit files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// Every document of a YAML file, as JSON values.
fn yaml(path: &Path) -> Vec<serde_json::Value> {
    let o = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("run python3 (scripts/deps.sh test installs python3-yaml)");
    assert!(
        o.status.success(),
        "{} is not YAML: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_kubernetes_job_runs_one_pod_per_shard_of_the_plan() {
    let dir = repo().join("deploy/kubernetes");
    let cm = &yaml(&dir.join("plan-configmap.yaml"))[0];
    assert_eq!(cm["kind"], "ConfigMap");
    let t = tmp();
    let plan_file = t.path().join("plan.json");
    std::fs::write(&plan_file, cm["data"]["plan.json"].as_str().unwrap()).unwrap();
    let plan = barge::plan::Plan::load(&plan_file).expect("the ConfigMap's plan loads");
    assert_eq!(cm["data"]["source"], plan.source.as_str());

    let job = &yaml(&dir.join("job.yaml"))[0];
    assert_eq!(job["kind"], "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], plan.shards.len());
    assert_eq!(spec["parallelism"], plan.shards.len());
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"))
            .clone()
    };
    // The index reaches barge: BARGE_SHARD is the pod's completion index.
    assert_eq!(
        env("BARGE_SHARD")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    // The plan reaches barge from the ConfigMap, at the path BARGE_PLAN names.
    let plan_path = env("BARGE_PLAN")["value"].as_str().unwrap().to_string();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |vol: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == vol)
            .unwrap_or_else(|| panic!("no mount of {vol}"))["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
    let pv = volume("plan");
    assert_eq!(pv["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(
        plan_path,
        format!(
            "{}/{}",
            mount_of("plan"),
            pv["configMap"]["items"][0]["path"].as_str().unwrap()
        )
    );
    // One volume per pod for state and staging: a generic ephemeral volume (a claim
    // made for each pod), and barge's state and staging live on it.
    let work = volume("work");
    assert!(
        work["ephemeral"]["volumeClaimTemplate"]["spec"].is_object(),
        "{work}"
    );
    let at = mount_of("work");
    let script = c["args"][0].as_str().unwrap();
    assert!(script.contains(&format!("--state {at}/state")), "{script}");
    assert!(
        script.contains(&format!("--staging {at}/staging")),
        "{script}"
    );
    assert!(
        script.contains("migrate --source \"$BARGE_SOURCE\" --dest \"$BARGE_DEST\""),
        "{script}"
    );
    // Credentials from a Secret, and the fleet key from a Secret of its own (never the
    // plan's ConfigMap); the status API on the port Prometheus is told about.
    assert!(c["envFrom"][0]["secretRef"]["name"].is_string());
    let fleet_key = &env("BARGE_FLEET_KEY")["valueFrom"]["secretKeyRef"];
    assert!(fleet_key["name"].is_string(), "{fleet_key}");
    assert_ne!(fleet_key["name"], cm["metadata"]["name"]);
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert!(
        script.contains(&format!("--http 0.0.0.0:{port}")),
        "{script}"
    );
    let ann = &spec["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], port.to_string());
    assert_eq!(pod["restartPolicy"], "OnFailure");
}

#[test]
fn the_systemd_template_passes_systemd_analyze_verify() {
    let t = tmp();
    let root = t.path().join("root");
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/barge")).unwrap();
    // The host's unit files (targets and the like) that the template depends on.
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    let copied = Command::new("cp")
        .args(["-r", "/usr/lib/systemd"])
        .arg(root.join("usr/lib/"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying /usr/lib/systemd");
    let barge = root.join("usr/bin/barge");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_barge"), &barge).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_barge"), &barge).unwrap();
    }
    std::fs::copy("/bin/sh", root.join("bin/sh")).unwrap();
    let deploy = repo().join("deploy/systemd");
    std::fs::copy(deploy.join("barge@.service"), units.join("barge@.service")).unwrap();
    std::fs::copy(deploy.join("fleet.env"), root.join("etc/barge/fleet.env")).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("barge@3.service")
        .output()
        .expect("run systemd-analyze (scripts/deps.sh test installs systemd)");
    let said =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("barge@"),
        "systemd-analyze verify complains: {said}"
    );
}
