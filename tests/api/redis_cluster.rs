//! Three `taogate serve` replicas on a real Redis Cluster: three masters started here on loopback
//! (`redis-server --cluster-enabled yes` ×3, joined by `redis-cli --cluster create`), addressed
//! as `redis+cluster://h1:p1,h2:p2,h3:p3`. The worker announces itself through the cluster (the
//! gateways have no configured workers), limits hold exactly across the replicas, a revocation
//! reaches every replica, and when the master holding one tenant's slot is killed, that tenant's
//! requests fail (`fail_closed`) while every other tenant keeps exact shared limits on every
//! replica; the master restarts, the tenant comes back by itself and its quota is still exact.
//! `taogate reconcile` reads the cached balances through the cluster. And a managed Redis'
//! shape: TLS (`rediss://`, a private CA given by `SSL_CERT_FILE`) with a password.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::Proc;
use crate::replicas::{self, burst, chat_body, count, free_port, metric, time_until};

/// Three cluster masters (no replicas), each with its own directory, AOF fsynced on every write.
pub(crate) struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Node {
    fn start(&mut self) {
        let (port, bus) = (self.port.to_string(), self.bus_port.to_string());
        let dir = self.dir.display().to_string();
        let args = [
            "--port",
            &port,
            "--cluster-port",
            &bus,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            // The other masters' slots stay served while one master is down.
            "--cluster-require-full-coverage",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ];
        self.proc = Some(Proc::start_quiet("redis-server", &args));
        let url = format!("redis://127.0.0.1:{port}");
        time_until(Duration::from_secs(10), || {
            redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    fn query(&self, cmd: &mut redis::Cmd) -> redis::RedisResult<String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut c)
    }
}

impl RedisCluster {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = (0..3)
            .map(|_| {
                let port = free_port();
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                Node {
                    port,
                    bus_port: free_port(),
                    dir: node_dir,
                    proc: None,
                }
            })
            .collect();
        for n in &mut nodes {
            n.start();
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_ok();
        cluster
    }

    /// `redis+cluster://` with every node.
    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Until every running node says the cluster is up with all slots assigned.
    fn wait_ok(&self) {
        time_until(Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.proc.is_some()).all(|n| {
                n.query(redis::cmd("CLUSTER").arg("INFO")).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_slots_assigned:16384")
                })
            })
        });
    }

    /// Index of the node holding `key`'s slot (read from `CLUSTER NODES`).
    fn owner_of(&self, key: &str) -> usize {
        let live = self.nodes.iter().find(|n| n.proc.is_some()).unwrap();
        let slot: i64 = {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", live.port)).unwrap();
            let mut c = client.get_connection().unwrap();
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(&mut c)
                .unwrap()
        };
        let table = live.query(redis::cmd("CLUSTER").arg("NODES")).unwrap();
        for line in table.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let port: u16 = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            let owns = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<i64>(), hi.parse::<i64>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("no node owns slot {slot}: {table}");
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].proc.take().unwrap().kill();
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i].start();
        self.wait_ok();
    }
}

/// A tenant's limiter keys share the hash tag `{t:<tenant id>}`: one slot.
fn tenant_key(prefix: &str, tenant: &str) -> String {
    format!("{prefix}{{t:{tenant}}}:probe")
}

#[test]
fn three_replicas_on_a_redis_cluster_hold_limits_and_survive_a_master_restart() {
    const HOLD: i64 = 1_000_000;
    let mut rc = RedisCluster::start();
    let c = replicas::cluster_full(
        &rc.url(),
        &["fail_closed", "fail_closed", "fail_closed"],
        (0, 2000),
        "",
        (true, &[]),
    );
    let app = &c.views[0];
    let registry_node = rc.owner_of(&format!("{}{{registry}}:workers", c.prefix));

    // Two tenants on two different masters, neither the registry's (so the worker stays
    // announced while A's master is down).
    let mut a = None;
    let mut b = None;
    for _ in 0..20 {
        let (tenant, owner, account) = c.tenant_owner_and_account();
        let node = rc.owner_of(&tenant_key(&c.prefix, &tenant));
        if node == registry_node {
            if b.is_none() {
                b = Some((node, tenant, owner, account));
            }
            continue;
        }
        if a.is_none() {
            a = Some((node, tenant, owner, account));
        } else if b.is_none() && a.as_ref().is_some_and(|x| x.0 != node) {
            b = Some((node, tenant, owner, account));
        }
        if a.is_some() && b.is_some() {
            break;
        }
    }
    let (a_node, _, a_owner, a_account) = a.expect("a tenant off the registry's node");
    let (b_node, _, b_owner, b_account) = b.expect("a tenant on another node");
    assert_ne!(a_node, b_node);

    // B is priced and funded: its balance is cached in the cluster, in its slot.
    app.post("/api/v1/plans")
        .bearer(&b_owner.token)
        .json(json!({"name": "per request", "is_default": true, "prices": {"*": {"request_nano": HOLD}}}))
        .expect(201, "");
    app.post(&format!("/api/v1/accounts/{b_account}/adjustments"))
        .bearer(&b_owner.token)
        .json(json!({"amount_nano": 1000 * HOLD, "reason": "top-up"}))
        .expect(201, "");

    // The registry: the gateways found the worker through the cluster.
    let (_, b_key) = c.key(&b_owner, &b_account, json!({}));
    let found = time_until(Duration::from_secs(15), || {
        c.views.iter().all(|v| {
            v.post("/v1/chat/completions")
                .bearer(&b_key)
                .json(chat_body("hi"))
                .status
                == 200
        })
    });
    eprintln!("every replica found the announced worker after {found:?}");

    // Exact limits across the three replicas.
    let (_, rpm_key) = c.key(&a_owner, &a_account, json!({"rpm": 100}));
    let statuses = burst(&c.gateways, &rpm_key, &chat_body("hi"), 300);
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 429)),
        (100, 200),
        "rpm=100 over 3 replicas on a cluster"
    );

    // A revocation on one replica reaches the others (pub/sub through the cluster).
    let (revoked_id, revoked) = c.key(&b_owner, &b_account, json!({}));
    for v in &c.views {
        v.get("/v1/models").bearer(&revoked).send().expect(200, "");
    }
    app.delete(&format!("/api/v1/keys/{revoked_id}"))
        .bearer(&b_owner.token)
        .send()
        .expect(200, "");
    for v in &c.views[1..] {
        let took = time_until(Duration::from_secs(1), || {
            v.get("/v1/models").bearer(&revoked).send().status == 401
        });
        eprintln!("revocation reached {} after {took:?}", v.base);
    }

    // A's daily quota, partly spent before its master goes down.
    let (_, quota_key) = c.key(&a_owner, &a_account, json!({"requests_per_day": 10}));
    let a_chat = |v: &crate::helpers::TestApp| {
        v.post("/v1/chat/completions")
            .bearer(&quota_key)
            .json(chat_body("hi"))
    };
    for _ in 0..4 {
        a_chat(app).expect(200, "");
    }

    rc.kill(a_node);
    let killed = Instant::now();
    for v in &c.views {
        let started = Instant::now();
        a_chat(v).expect(503, "limiter_unavailable");
        eprintln!(
            "tenant A on {} refused after {:?} (its slot's master is down)",
            v.base,
            started.elapsed()
        );
    }
    // B is served on every replica, under exact shared limits, while A's master is down.
    let (_, b_rpm) = c.key(&b_owner, &b_account, json!({"rpm": 20}));
    let started = Instant::now();
    let statuses = burst(&c.gateways, &b_rpm, &chat_body("hi"), 60);
    eprintln!(
        "tenant B: 60 requests over 3 replicas in {:?} while A's master is down",
        started.elapsed()
    );
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 429)),
        (20, 40),
        "B keeps exact limits during A's outage"
    );
    for v in &c.views {
        assert_eq!(
            metric(v, "taogate_limiter_degraded ").as_deref(),
            Some("0"),
            "no replica degraded as a whole"
        );
        assert_eq!(
            metric(v, "taogate_limiter_degraded_tenants").as_deref(),
            Some("1"),
            "only A is degraded on {}",
            v.base
        );
    }
    a_chat(app).expect(503, "limiter_unavailable");

    rc.restart(a_node);
    let restarted = Instant::now();
    for v in &c.views {
        time_until(Duration::from_secs(20), || {
            metric(v, "taogate_limiter_degraded_tenants").as_deref() == Some("0")
        });
    }
    eprintln!(
        "A's master down for {:?}; every replica serves A again {:?} after its restart",
        restarted - killed,
        restarted.elapsed()
    );
    // Exactly the 6 requests left of A's quota.
    let statuses: Vec<u16> = (0..10).map(|i| a_chat(&c.views[i % 3]).status).collect();
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 429)),
        (6, 4),
        "A's quota after the restart: {statuses:?}"
    );

    // Reconcile reads B's cached balance through the cluster.
    app.wait_for_rows("usage_records", 100 + 3 + 4 + 20 + 6);
    let (clean, report) =
        crate::ledger::reconcile_with_cache(&c.db.url, false, Some((&rc.url(), &c.prefix)));
    assert!(clean, "{report}");
    assert!(
        report["cached_balances"]["checked"].as_u64().unwrap() >= 1,
        "{report}"
    );
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 (openssl CLI), in `dir`.
fn tls_files(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name=dn\n[dn]\n[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=taogate test CA",
        "-config",
        "ca.cnf",
        "-extensions",
        "ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.cnf",
    ]);
}

/// Managed Redis as providers run it: TLS only, with a password. The gateways reach it with
/// `rediss://:<password>@localhost:<port>`, trusting the provider's CA through `SSL_CERT_FILE`;
/// the shared limiter decides (`fail_closed`: a Redis it could not reach would answer 503), and a
/// wrong password is a 503 that never shows the password.
#[test]
fn managed_redis_over_tls_with_a_password() {
    const PASSWORD: &str = "s3cret-redis-pw";
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path());
    let port = free_port();
    let (port_arg, d) = (port.to_string(), dir.path().display().to_string());
    let (cert, key, ca) = (
        format!("{d}/server.pem"),
        format!("{d}/server.key"),
        format!("{d}/ca.pem"),
    );
    let _redis = Proc::start_quiet(
        "redis-server",
        &[
            "--port",
            "0",
            "--tls-port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    time_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let env = [("SSL_CERT_FILE", ca.as_str())];
    let url = format!("rediss://:{PASSWORD}@localhost:{port}/0");
    let c = replicas::cluster_full(&url, &["fail_closed"], (0, 2000), "", (false, &env));
    let (owner, account) = c.owner_and_account();
    let (_, key) = c.key(&owner, &account, json!({"rpm": 2}));
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            c.views[0]
                .post("/v1/chat/completions")
                .bearer(&key)
                .json(chat_body("hi"))
                .status
        })
        .collect();
    assert_eq!(
        statuses,
        vec![200, 200, 429],
        "the shared limiter decided, over TLS"
    );
    assert_eq!(
        metric(&c.views[0], "taogate_limiter_degraded ").as_deref(),
        Some("0")
    );

    let wrong = format!("rediss://:not-the-{PASSWORD}@localhost:{port}/0");
    let bad = replicas::cluster_full(&wrong, &["fail_closed"], (0, 2000), "", (false, &env));
    let (owner, account) = bad.owner_and_account();
    let (_, key) = bad.key(&owner, &account, json!({"rpm": 2}));
    let refused = bad.views[0]
        .post("/v1/chat/completions")
        .bearer(&key)
        .json(chat_body("hi"))
        .expect(503, "limiter_unavailable");
    assert!(!refused.text.contains(PASSWORD), "{}", refused.text);
    let ready = bad.views[0].get("/readyz").send();
    assert!(!ready.text.contains(PASSWORD), "{}", ready.text);
}
