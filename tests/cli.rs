//! The `taogate` binary itself: `dev` end to end (seed, serve, revoke, restart), config validation
//! errors that name the key, `migrate` and `admin` on a fresh database, `openapi` output.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_taogate");

/// A `taogate` command with a clean environment (no inherited DATABASE_URL / TAOGATE_*).
fn taogate(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    cmd
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = ureq::request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let res = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = res.status();
    (status, res.into_json().unwrap_or(serde_json::Value::Null))
}

fn start_dev(dir: &Path, port: u16) -> Running {
    let child = taogate(dir)
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "data",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
            .call()
            .is_ok()
        {
            return running;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("taogate dev did not come up");
}

#[test]
fn dev_seeds_a_working_key_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let demo: serde_json::Value = {
        let _dev = start_dev(dir.path(), port);
        let demo: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("data/demo.json")).unwrap(),
        )
        .unwrap();
        let base = demo["base_url"].as_str().unwrap();
        assert_eq!(base, format!("http://127.0.0.1:{port}"));
        let key = demo["api_key"].as_str().unwrap();
        let (status, models) = http("GET", &format!("{base}/v1/models"), Some(key), None);
        assert_eq!(status, 200);
        assert_eq!(models["object"], "list");

        // The demo developer signs in and revokes the key: the same call is refused at once.
        let (status, login) = http(
            "POST",
            &format!("{base}/api/v1/auth/login"),
            None,
            Some(
                serde_json::json!({"email": demo["email"], "password": demo["password"], "tenant": demo["tenant"]}),
            ),
        );
        assert_eq!(status, 200, "{login}");
        let token = login["access_token"].as_str().unwrap();
        let (_, keys) = http("GET", &format!("{base}/api/v1/keys"), Some(token), None);
        let id = keys["data"][0]["id"].as_str().unwrap();
        assert_eq!(
            keys["data"][0]["last4"].as_str().unwrap(),
            &key[key.len() - 4..]
        );
        let (status, _) = http(
            "DELETE",
            &format!("{base}/api/v1/keys/{id}"),
            Some(token),
            None,
        );
        assert_eq!(status, 200);
        let (status, err) = http("GET", &format!("{base}/v1/models"), Some(key), None);
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (401, Some("api_key_revoked"))
        );
        demo
    };

    // Second start: same data dir, same demo.json, the revocation persisted, the password still works.
    // (A start on a port already taken fails before touching the data dir.)
    {
        let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = blocker.local_addr().unwrap().to_string();
        let before = std::fs::read(dir.path().join("data/devnet/metagraph.json")).unwrap();
        let out = taogate(dir.path())
            .args(["dev", "--listen", &taken, "--data-dir", "data"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("binding"));
        assert_eq!(
            std::fs::read(dir.path().join("data/devnet/metagraph.json")).unwrap(),
            before,
            "the running subnet's files are untouched"
        );
    }
    let port2 = free_port();
    let _dev = start_dev(dir.path(), port2);
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/demo.json")).unwrap())
            .unwrap();
    assert_eq!(again["api_key"], demo["api_key"]);
    assert_eq!(again["password"], demo["password"]);
    let base = format!("http://127.0.0.1:{port2}");
    assert_eq!(again["base_url"], base.as_str());
    let (status, _) = http(
        "GET",
        &format!("{base}/v1/models"),
        again["api_key"].as_str(),
        None,
    );
    assert_eq!(status, 401);
    let (status, _) = http(
        "POST",
        &format!("{base}/api/v1/auth/login"),
        None,
        Some(
            serde_json::json!({"email": again["email"], "password": again["password"], "tenant": again["tenant"]}),
        ),
    );
    assert_eq!(status, 200);
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn config_errors_name_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(taogate(dir.path()).args(["serve"]));
    assert!(!ok);
    assert!(out.contains("auth.jwt_secret"), "{out}");
    let (ok, out) = run(taogate(dir.path())
        .env("TAOGATE_DATABASE__POOL_SIZE", "0")
        .args(["migrate"]));
    assert!(!ok);
    assert!(out.contains("database.pool_size"), "{out}");
    let (ok, out) = run(taogate(dir.path())
        .env("DATABASE_URL", "mysql://localhost/x")
        .args(["migrate"]));
    assert!(!ok);
    assert!(out.contains("database_url"), "{out}");
    let (ok, out) = run(taogate(dir.path())
        .env("TAOGATE_HTTP__MAX_BODY_BYTES", "lots")
        .args(["migrate"]));
    assert!(!ok);
    assert!(out.to_lowercase().contains("http.max_body_bytes"), "{out}");
    std::fs::write(dir.path().join("bad.toml"), "[http]\nmax_body = 10\n").unwrap();
    let (ok, out) = run(taogate(dir.path()).args(["--config", "bad.toml", "migrate"]));
    assert!(!ok);
    assert!(out.contains("max_body"), "{out}");
    // Variables the CLI itself reads are not mistaken for config keys.
    let (ok, out) = run(taogate(dir.path())
        .env("TAOGATE_LOG_FORMAT", "json")
        .env("TAOGATE_TEST_PG", "x")
        .args(["migrate"]));
    assert!(ok, "{out}");
    let (ok, out) = run(taogate(dir.path()).args(["--config", "missing.toml", "migrate"]));
    assert!(!ok);
    assert!(out.contains("missing.toml"), "{out}");
}

#[test]
fn migrate_and_admin_bootstrap_a_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("prod.db").display());
    let cmd = || {
        let mut c = taogate(dir.path());
        c.env("DATABASE_URL", &db);
        c
    };
    let (ok, out) = run(cmd().args(["admin", "create-operator", "--email", "ops@example.com"]));
    assert!(!ok, "admin before migrate must refuse: {out}");
    assert!(out.contains("pending migrations"), "{out}");
    let (ok, out) = run(cmd().args(["migrate"]));
    assert!(
        ok && out.contains("applied ") && !out.contains("applied 0"),
        "{out}"
    );
    let (ok, out) = run(cmd().args(["migrate"]));
    assert!(ok && out.contains("applied 0"), "{out}");
    let (ok, out) = run(cmd().args(["admin", "create-operator", "--email", "Ops@Example.com"]));
    assert!(ok, "{out}");
    assert!(
        out.contains("password: "),
        "a generated password is printed once: {out}"
    );
    let (ok, out) = run(cmd().args([
        "admin",
        "create-operator",
        "--email",
        "ops@example.com",
        "--password",
        "another long password",
    ]));
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = run(cmd().args([
        "admin",
        "create-tenant",
        "--name",
        "Acme",
        "--slug",
        "acme",
        "--owner-email",
        "boss@acme.example",
        "--owner-password",
        "a long enough password",
    ]));
    assert!(ok, "{out}");
    let (ok, out) = run(cmd().args([
        "admin",
        "create-tenant",
        "--name",
        "Acme 2",
        "--slug",
        "acme",
    ]));
    assert!(!ok && out.contains("slug"), "{out}");
    let (ok, out) = run(cmd().args([
        "admin",
        "create-tenant",
        "--name",
        "Bad",
        "--slug",
        "Not A Slug",
    ]));
    assert!(!ok && out.contains("slug"), "{out}");
}

/// `admin bootstrap` sets up the operator, the first tenant with its owner and a priced default
/// plan in one go — all or nothing — and says that no worker is configured yet.
#[test]
fn admin_bootstrap_sets_up_the_first_run_all_or_nothing() {
    use diesel::{Connection, RunQueryDsl};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.db");
    let db = format!("sqlite://{}", path.display());
    let cmd = || {
        let mut c = taogate(dir.path());
        c.env("DATABASE_URL", &db);
        c
    };
    assert!(run(cmd().args(["migrate"])).0);
    let prices = r#"{"*": {"prompt_nano_per_mtok": 1000000000, "completion_nano_per_mtok": 2000000000, "request_nano": 100}}"#;
    let bootstrap = |slug: &str, operator: &str, prices: &str| {
        run(cmd().args([
            "admin",
            "bootstrap",
            "--operator-email",
            operator,
            "--tenant-name",
            "Acme",
            "--tenant-slug",
            slug,
            "--owner-email",
            &format!("boss@{slug}.example"),
            "--prices",
            prices,
        ]))
    };
    let (ok, out) = bootstrap("acme", "ops@example.com", prices);
    assert!(ok, "{out}");
    assert_eq!(out.matches("password: ").count(), 2, "{out}");
    assert!(out.contains("workers: none"), "{out}");
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        what: String,
    }
    let rows = || -> Vec<String> {
        let mut c = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query(
            "SELECT role || ':' || email AS what FROM users \
             UNION ALL SELECT 'tenant:' || slug FROM tenants \
             UNION ALL SELECT 'plan:' || name || ':' || is_default || ':' || prices FROM plans",
        )
        .load::<Row>(&mut c)
        .unwrap()
        .into_iter()
        .map(|r| r.what)
        .collect()
    };
    let mut first = rows();
    first.sort();
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(
        first.contains(&"operator:ops@example.com".to_owned()),
        "{first:?}"
    );
    assert!(
        first.contains(&"owner:boss@acme.example".to_owned()),
        "{first:?}"
    );
    assert!(first.contains(&"tenant:acme".to_owned()), "{first:?}");
    assert!(
        first
            .iter()
            .any(|r| r.starts_with("plan:Default:1:") && r.contains("2000000000")),
        "{first:?}"
    );
    // Bad prices, a taken operator email: refused, and nothing of it is written.
    let (ok, out) = bootstrap(
        "other",
        "ops2@example.com",
        r#"{"*": {"request_nano": -1}}"#,
    );
    assert!(!ok && out.contains("prices"), "{out}");
    let (ok, out) = bootstrap("other", "ops@example.com", prices);
    assert!(!ok && out.contains("already exists"), "{out}");
    let mut after = rows();
    after.sort();
    assert_eq!(after, first, "a failed bootstrap writes nothing");
}

#[test]
fn openapi_command_prints_the_committed_document() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(taogate(dir.path()).args(["openapi"]));
    assert!(ok);
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        printed == committed,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

/// The dev demo shows money and roles (issue 17): a priced plan with key limits, a starting
/// credit, an owner and a finance user; requests carry `x-ratelimit-*`, the balance moves, and
/// the credit runs out with 402.
#[test]
fn dev_demo_shows_money_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _dev = start_dev(dir.path(), port);
    let demo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/demo.json")).unwrap())
            .unwrap();
    let base = demo["base_url"].as_str().unwrap();
    let key = demo["api_key"].as_str().unwrap();
    let login = |email: &serde_json::Value, password: &serde_json::Value| {
        let (status, res) = http(
            "POST",
            &format!("{base}/api/v1/auth/login"),
            None,
            Some(
                serde_json::json!({"email": email, "password": password, "tenant": demo["tenant"]}),
            ),
        );
        assert_eq!(status, 200, "{res}");
        (
            res["access_token"].as_str().unwrap().to_owned(),
            res["user"]["role"].as_str().unwrap().to_owned(),
        )
    };
    let (developer, role) = login(&demo["email"], &demo["password"]);
    assert_eq!(role, "developer");
    let (owner, role) = login(&demo["owner_email"], &demo["owner_password"]);
    assert_eq!(role, "owner");
    let (finance, role) = login(&demo["finance_email"], &demo["finance_password"]);
    assert_eq!(role, "finance");
    let (_, me) = http(
        "GET",
        &format!("{base}/api/v1/balance"),
        Some(&developer),
        None,
    );
    let account = me["account_id"].as_str().unwrap().to_owned();
    let start = me["balance_nano"].as_i64().unwrap();
    assert!(start > 0, "a starting credit: {me}");
    let (_, plans) = http("GET", &format!("{base}/api/v1/plans"), Some(&owner), None);
    assert!(
        plans["data"][0]["prices"]["*"]["request_nano"]
            .as_i64()
            .unwrap()
            > 0
    );

    let mut statuses = Vec::new();
    for i in 0..40 {
        let res = ureq::post(&format!("{base}/v1/chat/completions"))
            .set("Authorization", &format!("Bearer {key}"))
            .send_json(serde_json::json!({"model": "taogate-demo",
                "messages": [{"role": "user", "content": format!("hello {i}")}]}));
        let res = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let status = res.status();
        if status == 200 {
            assert!(
                res.header("x-ratelimit-limit-requests").is_some(),
                "rate-limit headers on every answer"
            );
        }
        statuses.push(status);
        if status == 402 {
            let body: serde_json::Value = res.into_json().unwrap();
            assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        statuses.last(),
        Some(&402),
        "the credit runs out: {statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 2,
        "{statuses:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = http(
            "GET",
            &format!("{base}/api/v1/balance?account_id={account}"),
            Some(&finance),
            None,
        );
        let now = b["balance_nano"].as_i64().unwrap();
        if now < start && b["pending_nano"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the balance never moved: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// libpq, OpenSSL and SQLite are linked into the binary: it needs no libpq or libssl on the machine.
#[test]
fn the_binary_links_no_libpq_or_libssl() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_taogate"))
        .output()
        .expect("ldd (libc-bin)");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{libs}");
    for lib in ["libpq", "libssl", "libcrypto", "libsqlite"] {
        assert!(!libs.contains(lib), "{lib} is linked dynamically:\n{libs}");
    }
}

/// The linked-in libpq speaks TLS: with `sslmode=require` the server sees an encrypted connection
/// (the test server must have `ssl = on`, as Debian's PostgreSQL has by default).
#[test]
fn the_bundled_libpq_connects_over_tls() {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let base = std::env::var("TAOGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut conn = diesel::PgConnection::establish(&format!("{base}{sep}sslmode=require"))
        .expect("a TLS connection (is ssl = on in postgresql.conf?)");
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .unwrap();
    assert!(row.ssl, "the connection is encrypted");
}
