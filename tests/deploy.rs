//! The deployment files in deploy/ are checked by the tools their platforms use:
//! `systemd-analyze verify` for the unit, `promtool` for the alerting rules (syntax and
//! their unit tests), `kubernetes-validate` (the Kubernetes schemas, offline) for the
//! DaemonSet; the Grafana dashboard is checked for JSON and for metric names the agent
//! documents.
use std::{path::PathBuf, process::Command};

use handshake_trace_tests::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// Runs a checker; its whole output when it fails or warns.
fn check(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn tool(test: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        skip(test, &format!("{name} is not installed (`cargo xtask setup` installs it)"));
    }
    found
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    let test = "the_systemd_unit_verifies_cleanly";
    let Some(bin) = ready(test) else { return };
    let Some(analyze) = tool(test, "systemd-analyze") else { return };
    // verify wants ExecStart's binary to exist: point it at the one just built.
    let dir = tempdir("unit");
    let unit = std::fs::read_to_string(deploy("systemd/handshake-trace-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/handshake-trace agent"), "{unit}");
    let copy = dir.join("handshake-trace-agent.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/handshake-trace", &bin.display().to_string())).unwrap();
    let (ok, text) = check(Command::new(analyze).arg("verify").arg(&copy));
    // It warns (unknown keys, bad values) on stderr and still exits 0: any output fails.
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
    for needed in ["Type=notify", "CapabilityBoundingSet=CAP_BPF CAP_PERFMON", "NoNewPrivileges=yes", "ProtectSystem=strict", "LimitNOFILE=65536", "UMask=0077"] {
        assert!(unit.contains(needed), "the unit lost {needed}");
    }
}

#[test]
fn the_alerting_rules_check_and_pass_their_unit_tests() {
    let test = "the_alerting_rules_check_and_pass_their_unit_tests";
    let Some(_) = ready(test) else { return };
    let Some(promtool) = tool(test, "promtool") else { return };
    let (ok, text) = check(Command::new(&promtool).args(["check", "rules"]).arg(deploy("prometheus/alerts.yml")));
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = check(Command::new(&promtool).args(["test", "rules"]).arg(deploy("prometheus/alerts_test.yml")));
    assert!(ok, "promtool test rules:\n{text}");
}

#[test]
fn the_daemonset_validates_against_the_kubernetes_schemas() {
    let test = "the_daemonset_validates_against_the_kubernetes_schemas";
    let Some(_) = ready(test) else { return };
    let Some(validate) = kubernetes_validate(test) else { return };
    // 1.30: the oldest release with appArmorProfile in the security context; and the newest the tool knows.
    for version in ["1.30.0", "1.37.0"] {
        let (ok, text) = check(Command::new(&validate).args(["--strict", "-k", version]).arg(deploy("kubernetes/daemonset.yaml")));
        assert!(ok && !text.contains("ERROR"), "kubernetes-validate {version}:\n{text}");
        assert!(text.contains("daemonset/handshake-trace-agent"), "{text}");
    }
    // The NetworkPolicy beside it: only Prometheus reaches the metrics port.
    for version in ["1.30.0", "1.37.0"] {
        let (ok, text) = check(Command::new(&validate).args(["--strict", "-k", version]).arg(deploy("kubernetes/networkpolicy.yaml")));
        assert!(ok && !text.contains("ERROR"), "kubernetes-validate {version} networkpolicy.yaml:\n{text}");
        assert!(text.contains("networkpolicy/handshake-trace-agent"), "{text}");
    }
    let ds = std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).unwrap();
    for needed in ["hostPID: true", "- BPF", "- PERFMON", "path: /healthz", "path: /readyz", "/sys/kernel/tracing", "/sys/fs/bpf", "/sys/fs/cgroup"] {
        assert!(ds.contains(needed), "the DaemonSet lost {needed}");
    }
}

#[test]
fn the_dashboard_and_the_rules_use_only_documented_metrics() {
    let documented = metric_names(&std::fs::read_to_string(repo().join("docs/agent.md")).unwrap());
    assert!(documented.contains("handshake_trace_handshakes_total"), "{documented:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/handshake-trace.json")).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "handshake-trace");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    for (what, text) in [("dashboard", exprs.join("\n")), ("alert rules", rules)] {
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{what} uses no metric");
        let unknown: Vec<&String> = used.iter().filter(|m| !documented.contains(base_metric_name(m))).collect();
        assert!(unknown.is_empty(), "{what} uses metrics docs/agent.md does not document: {unknown:?}");
    }
}

/// kubernetes-validate from PyPI in a virtualenv under target/ (it bundles the schemas).
fn kubernetes_validate(test: &str) -> Option<PathBuf> {
    let venv = repo().join("target/deploy-tools");
    let exe = venv.join("bin/kubernetes-validate");
    if exe.is_file() {
        return Some(exe);
    }
    let python = tool(test, "python3")?;
    let (ok, text) = check(Command::new(python).args(["-m", "venv"]).arg(&venv));
    assert!(ok, "python3 -m venv:\n{text}");
    let (ok, text) = check(Command::new(venv.join("bin/pip")).args(["install", "-q", "kubernetes-validate==1.37.0"]));
    assert!(ok, "pip install kubernetes-validate:\n{text}");
    Some(exe)
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handshake-trace-deploy-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
