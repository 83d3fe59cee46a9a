//! Real `taogate worker` and `taogate devnet-miner` processes for the pool and protocol tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_taogate");
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
    pub url: String,
    pub hotkey: Option<String>,
}

impl Proc {
    /// Starts `taogate <args>` and reads the `{"url","hotkey"}` line it prints once listening.
    pub fn start(args: &[&str], config: Option<&Path>) -> Self {
        Self::start_env(args, config, &[])
    }

    /// As [`Proc::start`], with these environment variables too.
    pub fn start_env(args: &[&str], config: Option<&Path>, env: &[(&str, &str)]) -> Self {
        Self::announced(Self::command(args, config, env))
    }

    /// As [`Proc::start_env`], its log written to `log`.
    pub fn start_logging(
        args: &[&str],
        config: Option<&Path>,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let mut cmd = Self::command(args, config, env);
        cmd.stderr(std::fs::File::create(log).unwrap());
        Self::spawn_announced(cmd)
    }

    fn command(args: &[&str], config: Option<&Path>, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(args);
        cmd
    }

    /// Spawns `cmd` and reads the `{"url","hotkey"}` line it prints once listening. Its log goes
    /// to the test's stderr with `TAOGATE_TEST_VERBOSE=1`.
    fn announced(mut cmd: Command) -> Self {
        let verbose = std::env::var_os("TAOGATE_TEST_VERBOSE").is_some();
        cmd.stderr(if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        Self::spawn_announced(cmd)
    }

    fn spawn_announced(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("{cmd:?} printed {line:?}"));
        Self {
            child,
            url: v["url"].as_str().unwrap().to_owned(),
            hotkey: v["hotkey"].as_str().map(str::to_owned),
        }
    }

    /// Starts another program (a Python peer) that prints the same `{"url",…}` line.
    pub fn start_program(program: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::announced(cmd)
    }

    /// Starts a program that announces nothing (e.g. `redis-server`); `url` stays empty.
    pub fn start_quiet(program: &str, args: &[&str]) -> Self {
        Self::start_quiet_in(program, args, Path::new("."))
    }

    /// As [`Proc::start_quiet`], in the working directory `dir`.
    pub fn start_quiet_in(program: &str, args: &[&str], dir: &Path) -> Self {
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        Self {
            child,
            url: String::new(),
            hotkey: None,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.pid()])
            .stderr(Stdio::null())
            .status()
            .unwrap();
    }

    /// Waits up to `timeout` for the process to exit on its own; whether it did.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit code, if it did.
    pub fn exit_code(&mut self, timeout: std::time::Duration) -> Option<Option<i32>> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// An OpenAI-compatible stand-in with Bearer key `key`.
pub fn owner_gateway(key: &str, delay_ms: u64, label: &str) -> Proc {
    Proc::start(
        &[
            "devnet-miner",
            "--kind",
            "openai",
            "--api-key",
            key,
            "--delay-ms",
            &delay_ms.to_string(),
            "--label",
            label,
        ],
        None,
    )
}

/// An OpenAI-compatible stand-in with Bearer key `key` that misbehaves: `error`, `hang`, `drop`.
pub fn broken_gateway(key: &str, behaviour: &str) -> Proc {
    Proc::start(
        &[
            "devnet-miner",
            "--kind",
            "openai",
            "--api-key",
            key,
            "--behaviour",
            behaviour,
            "--label",
            "broken",
        ],
        None,
    )
}

/// A `taogate worker` routing model `m` to the OpenAI-compatible `upstream`, with its own hotkey;
/// with `redis` (URL, key prefix) it announces itself through that Redis.
pub fn worker(
    dir: &Path,
    name: &str,
    secret: &str,
    upstream: &str,
    key: &str,
    redis: Option<(&str, &str)>,
) -> Proc {
    let wallets = dir.join("wallets");
    let keyfile = wallets.join(name).join("hotkeys").join("default");
    std::fs::create_dir_all(keyfile.parent().unwrap()).unwrap();
    std::fs::write(
        &keyfile,
        taogate::worker::hotkey::Hotkey::generate().keyfile_json(),
    )
    .unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"{redis}
[worker]
listen = "127.0.0.1:0"
secret = "{secret}"
wallet_path = "{wallets}"
wallet_name = "{name}"
hotkey_name = "default"
first_byte_timeout_ms = 2000

[[worker.routes]]
model = "m"
[[worker.routes.upstreams]]
kind = "openai"
name = "owner"
base_url = "{upstream}/v1"
api_key = "{key}"
"#,
            wallets = wallets.display(),
            redis = match redis {
                Some((url, p)) => format!("redis_url = \"{url}\"\nredis_prefix = \"{p}\"\n[pool]\nheartbeat_secs = 1\nheartbeat_ttl_secs = 3\n"),
                None => String::new(),
            }
        ),
    )
    .unwrap();
    Proc::start(&["worker"], Some(&config))
}

/// Where a `taogate serve` test gateway keeps its state and whom it talks to.
pub struct GatewaySetup<'a> {
    pub data_dir: &'a Path,
    pub db: &'a str,
    /// (Redis URL, key prefix); none: in-process state.
    pub redis: Option<(&'a str, &'a str)>,
    /// The body of the `[limits]` section.
    pub limits: &'a str,
    /// (worker URL, worker secret), serving model `m`; an empty URL: workers announce themselves
    /// through Redis.
    pub worker: (&'a str, &'a str),
}

/// Writes a gateway config file at `path` (the test JWT secret and pepper) and returns the path.
pub fn gateway_config(path: &Path, g: &GatewaySetup<'_>) -> std::path::PathBuf {
    let redis = g.redis.map_or(String::new(), |(url, prefix)| {
        format!("redis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n")
    });
    std::fs::write(
        path,
        format!(
            r#"listen = "127.0.0.1:0"
data_dir = "{data}"
database_url = "{db}"
{redis}[auth]
jwt_secret = "{jwt}"
api_key_pepper = "{pepper}"
[limits]
{limits}
[pool]
workers = [{worker}]
worker_secret = "{secret}"
[[models]]
id = "m"
owned_by = "test"
"#,
            data = g.data_dir.display(),
            db = g.db,
            jwt = crate::helpers::JWT_SECRET,
            pepper = crate::helpers::PEPPER,
            limits = g.limits,
            worker = if g.worker.0.is_empty() {
                String::new()
            } else {
                format!("\"{}\"", g.worker.0)
            },
            secret = g.worker.1,
        ),
    )
    .unwrap();
    path.to_owned()
}
