//! The worker stands apart from the gateway: it, the OpenAI types and the internal hop import
//! nothing of the gateway's error type, HTTP plumbing, auth, models, database, billing, limits,
//! pool or routes (the worker runs on machines with no database; a gateway change must not
//! reach it by accident).

use std::path::Path;

const GATEWAY: [&str; 12] = [
    "crate::error",
    "crate::http",
    "crate::auth",
    "crate::models",
    "crate::db",
    "crate::routes",
    "crate::state",
    "crate::proxy",
    "crate::billing",
    "crate::limits",
    "crate::pool",
    "crate::app",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_worker_imports_nothing_of_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root.join("worker"), &mut files);
    sources(&root.join("openai"), &mut files);
    files.extend(
        [
            "hop.rs",
            "crypto.rs",
            "breaker.rs",
            "substrate.rs",
            "outbound.rs",
        ]
        .map(|f| root.join(f)),
    );
    assert!(files.len() > 20, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for gateway in GATEWAY {
                assert!(
                    !line.contains(&format!("{gateway}::"))
                        && !line.contains(&format!("{gateway};")),
                    "{}:{}: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}
