//! The official OpenAI Python SDK (pinned in tests/py/requirements.txt, installed into `.venv` by
//! scripts/test) against `taogate dev`: models, chat non-stream and stream with usage, tool calls
//! (non-stream, streamed, and the result sent back), errors as the SDK's exception types,
//! revocation.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> String {
    std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

#[test]
fn official_openai_sdk_against_taogate_dev() {
    let py = python();
    assert!(
        std::path::Path::new(&py).exists(),
        "{py} missing: run scripts/test (it creates .venv with the pinned SDK)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_taogate"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--token-delay-ms", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "taogate dev did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/openai_sdk.py"
        ))
        .arg(dir.path().join("demo.json"))
        .output()
        .unwrap();
    // `dev` runs its worker in process: the gateway called it directly, never over loopback HTTP.
    let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let _ = dev.kill();
    let _ = dev.wait();
    let attempts = |via: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("taogate_pool_attempts_total{{via=\"{via}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(attempts("process") >= 2, "{metrics}");
    assert_eq!(attempts("http"), 0, "{metrics}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "SDK script failed:\n{stdout}\n{stderr}"
    );
}
