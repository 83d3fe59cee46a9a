//! taogate's sr25519 hard derivation (the groundwork of TAO deposit addresses,
//! `<mnemonic>//taogate//<tenant>//<account>`) against the real `bittensor_wallet` (PyPI, the
//! wallet of the pinned bittensor 10.5.0): for fresh random phrases and several (tenant, account)
//! pairs — UUIDs, numbers, short and long junctions — both derive the same ss58 address.

use std::process::Command;

use taogate::substrate::{derive_hard, mini_secret_from_phrase, ss58_encode};

fn python() -> String {
    std::env::var("TAOGATE_TEST_BT10_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-bt10/bin/python").to_owned()
    })
}

const SCRIPT: &str = r#"
import json, sys
from bittensor_wallet import Keypair
job = json.load(sys.stdin)
out = {"phrase": Keypair.generate_mnemonic(12)}
out["addresses"] = [Keypair.create_from_uri(out["phrase"] + path).ss58_address for path in job["paths"]]
print(json.dumps(out))
"#;

#[test]
fn deposit_paths_derive_like_bittensor_wallet() {
    let paths: Vec<Vec<String>> = (0..6)
        .map(|i| {
            let tenant = uuid::Uuid::now_v7().to_string();
            let account = match i {
                0 => "7".to_owned(),
                1 => "a".repeat(31),
                2 => "b".repeat(40),
                _ => uuid::Uuid::now_v7().to_string(),
            };
            vec!["taogate".to_owned(), tenant, account]
        })
        .collect();
    let uris: Vec<String> = paths
        .iter()
        .map(|p| format!("//{}", p.join("//")))
        .collect();
    for _ in 0..2 {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(SCRIPT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python runs (scripts/test creates .venv-bt10)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::json!({"paths": uris}).to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let seed = mini_secret_from_phrase(answer["phrase"].as_str().unwrap()).unwrap();
        for (path, expected) in paths.iter().zip(answer["addresses"].as_array().unwrap()) {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let ours = derive_hard(&seed, &refs).unwrap();
            assert_eq!(
                ss58_encode(&ours.public.to_bytes()),
                expected.as_str().unwrap(),
                "{path:?}"
            );
        }
    }
}
