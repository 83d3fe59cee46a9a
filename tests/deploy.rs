//! The deploy files validate, offline (no Docker engine, no cluster): the compose stack with
//! `docker-compose config` (Debian's docker-compose) given every secret `.env.example` names — and
//! every variable the stack reads is named there; the Kustomize overlays built by `kubectl
//! kustomize` and checked against the Kubernetes schemas by `kubernetes-validate` (PyPI, pinned,
//! strict); every config file they mount parses as taogate's config; the stack has what an
//! operator needs (two gateways behind a proxy, a worker with the hotkey read-only, Prometheus
//! scraping each, Grafana with the dashboard).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use figment::Figment;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

fn python_bin(tool: &str) -> String {
    let python = std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned());
    Path::new(&python)
        .with_file_name(tool)
        .to_string_lossy()
        .into_owned()
}

/// `${NAME` references in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    text.match_indices("${")
        .map(|(i, _)| {
            let rest = &text[i + 2..];
            rest[..rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap()]
                .to_owned()
        })
        .collect()
}

#[test]
fn the_compose_stack_validates_with_every_secret_named() {
    let compose = std::fs::read_to_string(format!("{DEPLOY}/docker-compose.yml")).unwrap();
    let example = std::fs::read_to_string(format!("{DEPLOY}/.env.example")).unwrap();
    let named: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    let used = variables(&compose);
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<&String> = used.difference(&named).collect();
    assert!(missing.is_empty(), ".env.example does not name {missing:?}");
    // Every secret given (blank ones filled), the file validates.
    let dir = tempfile::tempdir().unwrap();
    let env: String = example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            let v = if v.is_empty() {
                "0123456789abcdef0123456789abcdef"
            } else {
                v
            };
            format!("{k}={v}\n")
        })
        .collect();
    std::fs::write(dir.path().join(".env"), env).unwrap();
    let out = Command::new("docker-compose")
        .current_dir(DEPLOY)
        .args(["-f", "docker-compose.yml", "--env-file"])
        .arg(dir.path().join(".env"))
        .arg("config")
        .output()
        .expect("docker-compose (Debian's docker-compose package; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = String::from_utf8_lossy(&out.stdout);
    for service in [
        "postgres:",
        "redis:",
        "migrate:",
        "gateway-1:",
        "gateway-2:",
        "worker:",
        "proxy:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            resolved.contains(&format!("  {service}")),
            "no {service} in\n{resolved}"
        );
    }
    assert!(
        resolved.contains("/wallets:ro"),
        "the hotkey is mounted read-only"
    );
    assert!(resolved.contains("--appendonly"), "Redis keeps an AOF");
    // Without the secrets it refuses to start, naming what is missing.
    std::fs::write(dir.path().join("empty.env"), "").unwrap();
    let bare = Command::new("docker-compose")
        .current_dir(DEPLOY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["-f", "docker-compose.yml", "--env-file"])
        .arg(dir.path().join("empty.env"))
        .arg("config")
        .output()
        .unwrap();
    assert!(!bare.status.success());
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("in .env"),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    // Prometheus scrapes both replicas and the worker; the proxy balances both replicas.
    let prom = std::fs::read_to_string(format!("{DEPLOY}/prometheus.yml")).unwrap();
    let nginx = std::fs::read_to_string(format!("{DEPLOY}/nginx.conf")).unwrap();
    for target in ["gateway-1:8080", "gateway-2:8080"] {
        assert!(prom.contains(target) && nginx.contains(target), "{target}");
    }
    assert!(prom.contains("worker:9100"));
}

#[test]
fn the_kubernetes_overlays_build_and_validate() {
    for overlay in ["staging", "production"] {
        let out = Command::new("kubectl")
            .args(["kustomize", &format!("{DEPLOY}/k8s/overlays/{overlay}")])
            .output()
            .expect("kubectl (Debian's kubernetes-client; .ci/run installs it)");
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = String::from_utf8(out.stdout).unwrap();
        for kind in [
            "Deployment",
            "Service",
            "ConfigMap",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
        ] {
            assert!(
                built.contains(&format!("kind: {kind}\n")),
                "{overlay}: no {kind}"
            );
        }
        assert!(built.contains("path: /readyz") && built.contains("path: /healthz"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &built).unwrap();
        let check = Command::new(python_bin("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", "1.31.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate (tests/py/requirements.txt)");
        assert!(
            check.status.success(),
            "{overlay}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn every_mounted_config_parses_as_taogates() {
    for file in [
        "taogate.example.toml",
        "worker.toml",
        "k8s/base/taogate.toml",
        "k8s/base/worker.toml",
    ] {
        let path = format!("{DEPLOY}/{file}");
        taogate::config::Config::load(Some(Path::new(&path)), Figment::new())
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
    }
}

/// `taogate_…` names in `text` (a histogram's `_bucket`, `_sum`, `_count` series as its family).
fn metric_names(text: &str, quoted: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("taogate_") {
        let preceded_by_quote = i > 0 && rest.as_bytes()[i - 1] == b'"';
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if !quoted || (preceded_by_quote && tail[end..].starts_with('"')) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The dashboard charts every metric family the gateway and the worker register, and nothing else.
#[test]
fn the_dashboard_shows_every_metric_family() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DEPLOY}/grafana/taogate.json")).unwrap(),
    )
    .unwrap();
    let mut charted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            charted.extend(metric_names(target["expr"].as_str().unwrap(), false));
        }
    }
    let mut registered = metric_names(include_str!("../src/metrics.rs"), true);
    registered.extend(metric_names(include_str!("../src/worker/metrics.rs"), true));
    assert!(registered.len() >= 25, "{registered:?}");
    let missing: Vec<_> = registered.difference(&charted).collect();
    let unknown: Vec<_> = charted.difference(&registered).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "not charted: {missing:?}; charted but not registered: {unknown:?}"
    );
}
