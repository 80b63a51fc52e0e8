//! The deployment files in `deploy/` (issue 17): the Kubernetes Indexed Job is parsed as
//! YAML (python3-yaml, as kubectl would read it) and checked for what a move over N
//! nodes needs; the systemd template passes `systemd-analyze verify` in a root that
//! holds it, the real barge binary and the host's unit files. Issue 27: the control
//! API stays on loopback, containers and units are sandboxed, and the shipped
//! passphrase is no passphrase barge accepts.

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
    // plan's ConfigMap). The status API, which takes control, listens on the pod's
    // loopback only; Prometheus is pointed at the read-only metrics listener, the only
    // port the pod declares.
    assert!(c["envFrom"][0]["secretRef"]["name"].is_string());
    let fleet_key = &env("BARGE_FLEET_KEY")["valueFrom"]["secretKeyRef"];
    assert!(fleet_key["name"].is_string(), "{fleet_key}");
    assert_ne!(fleet_key["name"], cm["metadata"]["name"]);
    let ports = c["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let port = ports[0]["containerPort"].as_u64().unwrap();
    assert!(script.contains("--http 127.0.0.1:"), "{script}");
    assert!(!script.contains("--http 0.0.0.0"), "{script}");
    assert!(
        script.contains(&format!("--metrics-http 0.0.0.0:{port}")),
        "{script}"
    );
    let ann = &spec["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], port.to_string());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(pod["restartPolicy"], "OnFailure");
    // Sandboxed: no privilege escalation, no capability, a read-only root, not root;
    // what barge writes (state, staging) is on the work volume, scratch on /tmp.
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{sc}"
    );
    assert!(sc["capabilities"]["add"].is_null(), "{sc}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(mount_of("tmp"), "/tmp");
    assert!(volume("tmp")["emptyDir"].is_object());
}

/// The `Key=value` settings of a unit file's lines (comments left out).
fn unit_settings(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Issue 27: every unit that runs barge is sandboxed: no new privileges, a read-only
/// system with only barge's own paths writable, private /tmp, no /home, and a
/// capability bounding set of what it needs (raw drives: CAP_SYS_ADMIN for NVMe admin
/// commands; the dashboard: nothing).
#[test]
fn every_barge_unit_is_sandboxed() {
    let image = repo().join("image/rootfs/etc/systemd/system");
    let units = [
        (repo().join("deploy/systemd/barge@.service"), "CAP_IPC_LOCK"),
        (
            image.join("barge.service"),
            "CAP_SYS_ADMIN CAP_SYS_RAWIO CAP_IPC_LOCK",
        ),
        (
            image.join("barge-prepare.service"),
            "CAP_SYS_ADMIN CAP_SYS_RAWIO CAP_IPC_LOCK",
        ),
        (image.join("barge-tui.service"), ""),
    ];
    for (unit, caps) in units {
        let s = unit_settings(&unit);
        let get = |k: &str| -> Vec<&str> {
            s.iter()
                .filter(|(a, _)| a == k)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let name = unit.display();
        for (k, v) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            assert_eq!(get(k), [v], "{name}: {k}");
        }
        assert_eq!(get("CapabilityBoundingSet"), [caps], "{name}");
        let writable = get("ReadWritePaths").join(" ");
        let state_dir = !get("StateDirectory").is_empty();
        if !name.to_string().ends_with("barge-tui.service") {
            assert!(
                state_dir || writable.split(' ').any(|p| p == "/var/lib/barge"),
                "{name}: the state must stay writable ({writable:?})"
            );
        } else {
            assert!(writable.is_empty(), "{name}: {writable:?}");
        }
    }
}

/// Issue 27: fleet.env ships no passphrase `barge init` would take, and init refuses a
/// placeholder one, naming the variable.
#[test]
fn the_shipped_passphrase_and_placeholders_are_refused_by_init() {
    let env = std::fs::read_to_string(repo().join("deploy/systemd/fleet.env")).unwrap();
    let shipped = env
        .lines()
        .find_map(|l| l.strip_prefix("BARGE_PASSPHRASE="))
        .expect("fleet.env names BARGE_PASSPHRASE");
    for (pass, why) in [
        (shipped, "empty"),
        ("change-me", "placeholder"),
        ("changeme", "placeholder"),
        ("abc12345", "shorter than 12"),
    ] {
        let t = tmp();
        let state = t.path().join("state");
        let o = bin()
            .arg("--state")
            .arg(&state)
            .args(["--passphrase-env", "BARGE_PASSPHRASE", "init"])
            .args(SMALL)
            .env("BARGE_PASSPHRASE", pass)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{pass:?} was taken: {err}");
        assert!(
            err.contains("BARGE_PASSPHRASE") && err.contains(why),
            "{pass:?}: {err}"
        );
        assert!(!state.join("keys/key.json").exists(), "{pass:?}");
    }
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
    // The image's units too (the sandboxing of issue 27); udevadm may be missing on
    // the host, and verify only asks that the programs exist.
    let image = repo().join("image/rootfs/etc");
    for u in [
        "barge.service",
        "barge-prepare.service",
        "barge-tui.service",
    ] {
        std::fs::copy(image.join("systemd/system").join(u), units.join(u)).unwrap();
    }
    std::fs::copy(
        image.join("barge/barge.env"),
        root.join("etc/barge/barge.env"),
    )
    .unwrap();
    if !root.join("usr/bin/udevadm").exists() {
        std::fs::copy("/bin/sh", root.join("usr/bin/udevadm")).unwrap();
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args([
            "barge@3.service",
            "barge.service",
            "barge-prepare.service",
            "barge-tui.service",
        ])
        .output()
        .expect("run systemd-analyze (scripts/deps.sh test installs systemd)");
    let said =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "systemd-analyze verify: {said}");
    for unit in [
        "barge@",
        "barge.service",
        "barge-prepare.service",
        "barge-tui.service",
    ] {
        assert!(
            !said.contains(unit),
            "systemd-analyze verify complains about {unit}: {said}"
        );
    }
}
