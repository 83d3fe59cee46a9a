//! Test harness: a real server on port 0 over a fresh database per test — a temp SQLite file, or a
//! PostgreSQL database cloned from a migrated template — plus a small blocking HTTP client and
//! fixtures (operator, tenants, users, keys) created through the public API.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use diesel::{Connection, PgConnection, RunQueryDsl};
use figment::Figment;
use figment::providers::Serialized;
use serde_json::{Value, json};
use taogate::config::Config;
use taogate::db::{Db, migrations};
use taogate::pool::registry::Registry;
use taogate::state::AppState;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";
pub const PEPPER: &str = "test-pepper-0123456789abcdef0123456789abcd";
pub const PASSWORD: &str = "correct horse battery";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named test function once per backend: `mod sqlite { fn name() }`, `mod postgres { … }`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::helpers::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::helpers::Backend::Postgres) } )*
        }
    };
}

/// The test Redis (`TAOGATE_TEST_REDIS`, default redis://127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("TAOGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Admin URL of the test PostgreSQL server (`TAOGATE_TEST_PG`).
pub fn pg_admin_url() -> String {
    std::env::var("TAOGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_url(db: &str) -> String {
    let admin = pg_admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(admin);
    format!("{base}/{db}")
}

/// The migrated template database, named after the migrations it holds (a checkout with other
/// migrations — another branch, a CI run beside a working copy — gets its own template).
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        // FNV-1a over every migration's name and SQL.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for path in entries {
            let mut bytes = path.file_name().unwrap().as_encoded_bytes().to_vec();
            for file in ["up.sql", "down.sql"] {
                bytes.extend(std::fs::read(path.join(file)).unwrap_or_default());
            }
            for b in bytes {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("taogate_test_template_{hash:016x}")
    })
}

/// Migrates the template database once per process, under an advisory lock across processes.
fn pg_template() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    let template = template_name();
    READY.get_or_init(|| {
        let mut admin = PgConnection::establish(&pg_admin_url())
            .expect("PostgreSQL reachable (TAOGATE_TEST_PG)");
        diesel::sql_query("SELECT pg_advisory_lock(73917)")
            .execute(&mut admin)
            .unwrap();
        let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{template}')"
        )))
        .get_result(&mut admin)
        .unwrap();
        if !exists {
            diesel::sql_query(format!("CREATE DATABASE {template}"))
                .execute(&mut admin)
                .unwrap();
        }
        {
            let db = Db::connect(&pg_url(template), 2).unwrap();
            migrations::run_pending(&db).unwrap();
        }
        // The pool may still be closing (or finishing) a connection to the template; CREATE
        // DATABASE … TEMPLATE refuses while anyone is connected, so wait until nobody is.
        for _ in 0..250 {
            let busy: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                "EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = '{template}')"
            )))
            .get_result(&mut admin)
            .unwrap();
            if !busy {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        diesel::sql_query("SELECT pg_advisory_unlock(73917)")
            .execute(&mut admin)
            .unwrap();
    });
    template
}

/// A fresh, migrated database; dropped with the guard.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let db = Db::connect(&url, 2).unwrap();
                migrations::run_pending(&db).unwrap();
                Self {
                    url,
                    pg_name: None,
                    _dir: dir,
                }
            }
            Backend::Postgres => {
                let template = pg_template();
                let name = format!("taogate_t_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
                diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
                    .execute(&mut admin)
                    .unwrap();
                Self {
                    url: pg_url(&name),
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }

    /// An empty database (no migrations), for the migration tests.
    pub fn empty(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("empty.db").display()),
                pg_name: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let name = format!("taogate_t_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .unwrap();
                Self {
                    url: pg_url(&name),
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut admin) = PgConnection::establish(&pg_admin_url())
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin);
        }
    }
}

/// The HTTP answer, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }

    /// The OpenAI error `code`, if this is an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and, for errors, the OpenAI error shape and code.
    #[track_caller]
    pub fn expect(self, status: u16, code: &str) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        if !code.is_empty() {
            assert_eq!(self.code(), code, "unexpected code; body: {}", self.text);
            let err = &self.body["error"];
            assert!(
                err["message"].is_string() && err["type"].is_string(),
                "not OpenAI-shaped: {}",
                self.text
            );
            assert!(
                err.get("param").is_some(),
                "error without param: {}",
                self.text
            );
        }
        self
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {}: {}",
            self.status,
            self.text
        );
        self.body
    }
}

pub struct Request<'a> {
    app: &'a TestApp,
    method: &'a str,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request<'_> {
    pub fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn send(self) -> Resp {
        self.raw(None)
    }

    pub fn json(self, body: Value) -> Resp {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.header("Content-Type", "application/json")
            .raw(Some(&bytes))
    }

    pub fn raw(self, body: Option<&[u8]>) -> Resp {
        let mut req = ureq::request(self.method, &format!("{}{}", self.app.base, self.path));
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let res = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = res.status();
        let headers = res
            .headers_names()
            .into_iter()
            .map(|n| (n.to_lowercase(), res.header(&n).unwrap_or("").to_owned()))
            .collect();
        let text = res.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }
}

/// A signed-in user: tokens plus ids.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub refresh: String,
    pub user_id: String,
    pub email: String,
}

pub struct TestApp {
    pub base: String,
    pub db: Db,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
    _test_db: Option<TestDb>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Serialises the creation of servers: each binds, migrates and spins up its own runtime.
static SPAWN: Mutex<()> = Mutex::new(());

impl TestApp {
    pub fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Figment::new())
    }

    /// Spawns with extra config overrides (e.g. a small body limit).
    pub fn spawn_with(backend: Backend, overrides: Figment) -> Self {
        Self::spawn_full(backend, overrides, |config, _| async move { config })
    }

    /// Spawns with a local subnet (worker, Epistula miners, owner gateway) in the server's system;
    /// the worker joins through the (in-process) registry; the miners pause `delay_ms` between words.
    pub fn spawn_with_subnet(backend: Backend, delay_ms: u64) -> Self {
        Self::spawn_with_subnet_and(backend, delay_ms, Figment::new())
    }

    /// As [`TestApp::spawn_with_subnet`], with config overrides.
    pub fn spawn_with_subnet_and(backend: Backend, delay_ms: u64, overrides: Figment) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut app =
            Self::spawn_full(backend, overrides, move |mut config, registry| async move {
                let heartbeat = (
                    std::time::Duration::from_secs(2),
                    std::time::Duration::from_secs(6),
                );
                let delay = std::time::Duration::from_millis(delay_ms);
                let subnet = taogate::devnet::subnet::spawn(&path, delay, &registry, heartbeat)
                    .await
                    .unwrap();
                config.pool.worker_secret = subnet.worker_secret.into();
                for model in subnet.models {
                    config.models.push(taogate::config::ModelConfig {
                        id: model.into(),
                        owned_by: "devnet".into(),
                        max_tokens: Some(1000),
                    });
                }
                config
            });
        app._dirs.push(dir);
        app
    }

    /// Spawns after `setup` adjusted the config inside the server's actix system (where it may
    /// start other servers, such as workers and miners, announcing them in the registry).
    pub fn spawn_full<F, Fut>(backend: Backend, overrides: Figment, setup: F) -> Self
    where
        F: FnOnce(Config, Registry) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Config> + 'static,
    {
        let test_db = TestDb::new(backend);
        // PostgreSQL runs with Redis (limits, key cache invalidation, worker registry) under a
        // prefix of its own; SQLite with in-process state.
        let redis = match backend {
            Backend::Postgres => (redis_url(), format!("tg-test-{}:", short_id())),
            Backend::Sqlite => (String::new(), String::new()),
        };
        // Each server journals usage in a directory of its own.
        let data_dir = tempfile::tempdir().unwrap();
        let base = Figment::new()
            .merge(Serialized::default("data_dir", data_dir.path()))
            .merge(Serialized::default("database_url", &test_db.url))
            .merge(Serialized::default("redis_url", &redis.0))
            .merge(Serialized::default("redis_prefix", &redis.1))
            // A loaded test box must not turn a slow Redis answer into an outage (fail-open).
            // Outages are tested on their own (replicas, durable).
            .merge(Serialized::default("limits.redis_timeout_ms", 5000))
            .merge(Serialized::default("auth.jwt_secret", JWT_SECRET))
            .merge(Serialized::default("auth.api_key_pepper", PEPPER))
            .merge(overrides);
        let config = Config::load(None, base).unwrap();
        let db = Db::connect(&test_db.url, 4).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let server_db = db.clone();
        let _guard = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let registry = Registry::new(&config.redis_url, &config.redis_prefix).unwrap();
                let config = setup(config, registry.clone()).await;
                config.validate(true).unwrap();
                let state = AppState::new(server_db, config, registry).unwrap();
                let running = taogate::app::start(state, listener, 1).unwrap();
                tx.send(running.server.handle()).unwrap();
                let _ = running.server.await;
            })
        });
        let handle = rx.recv().unwrap();
        Self {
            base: format!("http://{addr}"),
            db,
            handle: Some(handle),
            thread: Some(thread),
            _test_db: Some(test_db),
            _dirs: vec![data_dir],
        }
    }

    /// The URL of this app's own database.
    pub fn db_url(&self) -> String {
        self._test_db
            .as_ref()
            .expect("an app with its own database")
            .url
            .clone()
    }

    /// A view of a gateway running elsewhere (a `taogate serve` process) on database `db`, so the
    /// same fixtures and request helpers work against it.
    pub fn remote(base: &str, db: Db) -> Self {
        Self {
            base: base.to_owned(),
            db,
            handle: None,
            thread: None,
            _test_db: None,
            _dirs: vec![],
        }
    }

    pub fn req(&self, method: &'static str, path: &str) -> Request<'_> {
        Request {
            app: self,
            method,
            path: path.to_owned(),
            headers: vec![],
        }
    }

    pub fn get(&self, path: &str) -> Request<'_> {
        self.req("GET", path)
    }

    pub fn post(&self, path: &str) -> Request<'_> {
        self.req("POST", path)
    }

    pub fn patch(&self, path: &str) -> Request<'_> {
        self.req("PATCH", path)
    }

    pub fn put(&self, path: &str) -> Request<'_> {
        self.req("PUT", path)
    }

    pub fn delete(&self, path: &str) -> Request<'_> {
        self.req("DELETE", path)
    }

    /// Creates an operator directly in the database (as `taogate admin create-operator` does) and signs in.
    pub fn operator(&self) -> Session {
        let email = format!("op-{}@example.com", short_id());
        let hash = actix_web::rt::System::new()
            .block_on(taogate::auth::password::hash(PASSWORD.into()))
            .unwrap();
        let user = taogate::models::user::User::new(
            None,
            None,
            &email,
            hash,
            taogate::domain::Role::Operator,
        );
        let mut conn = self.db.get().unwrap();
        user.insert(&mut conn).unwrap();
        self.login(&email, None)
    }

    pub fn login(&self, email: &str, tenant: Option<&str>) -> Session {
        let mut body = json!({"email": email, "password": PASSWORD});
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        let res = self
            .post("/api/v1/auth/login")
            .json(body)
            .expect(200, "")
            .ok();
        session(&res)
    }

    /// A tenant with an owner; returns (tenant id, slug, owner session).
    pub fn tenant(&self, op: &Session, allow_signup: bool) -> (String, String, Session) {
        let slug = format!("t-{}", short_id());
        let email = format!("owner@{slug}.example.com");
        let res = self
            .post("/api/v1/tenants")
            .bearer(&op.token)
            .json(
                json!({"name": format!("Tenant {slug}"), "slug": slug, "allow_signup": allow_signup,
                "owner_email": email, "owner_password": PASSWORD}),
            )
            .expect(201, "")
            .ok();
        let id = res["id"].as_str().unwrap().to_owned();
        let owner = self.login(&email, Some(&slug));
        (id, slug, owner)
    }

    pub fn account(&self, manager: &Session, name: &str) -> String {
        let res = self
            .post("/api/v1/accounts")
            .bearer(&manager.token)
            .json(json!({"name": name}))
            .expect(201, "")
            .ok();
        res["id"].as_str().unwrap().to_owned()
    }

    /// Creates a user with `role` (and `account` for developers) and signs them in.
    pub fn user(
        &self,
        manager: &Session,
        slug: &str,
        role: &str,
        account: Option<&str>,
    ) -> Session {
        let email = format!("{role}-{}@{slug}.example.com", short_id());
        let mut body = json!({"email": email, "password": PASSWORD, "role": role});
        if let Some(a) = account {
            body["account_id"] = json!(a);
        }
        self.post("/api/v1/users")
            .bearer(&manager.token)
            .json(body)
            .expect(201, "");
        self.login(&email, Some(slug))
    }

    /// Creates a key; returns (key id, secret).
    pub fn key(&self, who: &Session, account: Option<&str>) -> (String, String) {
        let mut body = json!({"name": "test key"});
        if let Some(a) = account {
            body["account_id"] = json!(a);
        }
        let res = self
            .post("/api/v1/keys")
            .bearer(&who.token)
            .json(body)
            .expect(201, "")
            .ok();
        (
            res["id"].as_str().unwrap().to_owned(),
            res["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// A key of `account` allowed `concurrency` requests in flight: (key id, secret).
    pub fn concurrent_key(
        &self,
        who: &Session,
        account: &str,
        concurrency: i64,
    ) -> (String, String) {
        let (id, secret) = self.key(who, Some(account));
        self.patch(&format!("/api/v1/keys/{id}"))
            .bearer(&who.token)
            .json(json!({"limits": {"concurrency": concurrency}}))
            .expect(200, "");
        (id, secret)
    }

    /// A tenant owner, one account and an API key of it: (owner, account id, key id, secret).
    pub fn api_key(&self) -> (Session, String, String, String) {
        let op = self.operator();
        let (_, _, owner) = self.tenant(&op, false);
        let account = self.account(&owner, "Customer");
        let (id, secret) = self.key(&owner, Some(&account));
        (owner, account, id, secret)
    }

    /// Waits (up to 5 s) until `table` has `n` rows; usage is recorded off the request path.
    pub fn wait_for_rows(&self, table: &str, n: i64) {
        for _ in 0..250 {
            if self.count(table) >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(self.count(table), n, "rows in {table}");
    }

    /// Number of rows in `table`, read straight from the database.
    pub fn count(&self, table: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.db.get().unwrap();
        let rows: Vec<Count> = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
            .load(&mut *conn)
            .unwrap();
        rows[0].n
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            actix_web::rt::System::new().block_on(handle.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn session(res: &Value) -> Session {
    Session {
        token: res["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh: res["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        user_id: res["user"]["id"].as_str().unwrap().to_owned(),
        email: res["user"]["email"].as_str().unwrap().to_owned(),
    }
}

pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// Fires `n` chat requests at once (async, so every one is on the wire together), round-robin over
/// `bases`; request `i` sends `body(i)`. Returns (status, body text) in order; 0 = transport error.
pub fn burst(
    bases: &[&str],
    key: &str,
    body: impl Fn(usize) -> Value,
    n: usize,
) -> Vec<(u16, String)> {
    burst_with(bases, key, body, n, &[])
}

/// As [`burst`], every request also sending `headers`.
pub fn burst_with(
    bases: &[&str],
    key: &str,
    body: impl Fn(usize) -> Value,
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<(u16, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let mut req = client
                    .post(format!("{}/v1/chat/completions", bases[i % bases.len()]))
                    .bearer_auth(key);
                for (name, value) in headers {
                    req = req.header(*name, *value);
                }
                let req = req
                    .json(&body(i))
                    .timeout(std::time::Duration::from_secs(60));
                tokio::spawn(async move {
                    match req.send().await {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            (status, res.text().await.unwrap_or_default())
                        }
                        Err(_) => (0, String::new()),
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}
