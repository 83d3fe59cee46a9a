//! `taogate worker`: a validator dendrite worker (see `crate::worker`). Prints one JSON line with
//! its URL and hotkey once it listens, so scripts can use `listen = "127.0.0.1:0"`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::worker::hotkey::Hotkey;
use crate::worker::{self, Worker};

pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate(false)?;
    config.validate_worker()?;
    let w = &config.worker;
    let hotkey = Arc::new(Hotkey::from_keyfile(&Hotkey::keyfile_path(
        &w.wallet_path,
        &w.wallet_name,
        &w.hotkey_name,
    ))?);
    let worker = Arc::new(Worker::build(w, hotkey.clone())?);
    crate::openai::tokens::warm_up();
    worker.spawn_metagraph_refresh(Duration::from_secs(30));
    let listener = TcpListener::bind(w.listen).with_context(|| format!("binding {}", w.listen))?;
    let addr = listener.local_addr()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let server = worker::start(worker, listener, threads, config.http.max_body_bytes)?;
    if !config.redis_url.is_empty() {
        let registry =
            crate::pool::registry::Registry::new(&config.redis_url, &config.redis_prefix)?;
        let url = if w.announce_url.is_empty() {
            format!("http://{addr}")
        } else {
            w.announce_url.clone()
        };
        let (every, ttl) = (
            Duration::from_secs(config.pool.heartbeat_secs.max(1)),
            Duration::from_secs(config.pool.heartbeat_ttl_secs.max(1)),
        );
        registry.announce(&url, ttl).await?;
        registry.spawn_announcer(url, every, ttl);
    }
    println!(
        "{}",
        serde_json::json!({"url": format!("http://{addr}"), "hotkey": hotkey.ss58})
    );
    tracing::info!(addr = %addr, hotkey = %hotkey.ss58, "worker listening on http://{addr}");
    server.await?;
    Ok(())
}

/// The miner's hotkey as announced (none for an owner gateway).
fn key_ss58(kind: &str, key: &Hotkey) -> Option<String> {
    (kind != "openai").then(|| key.ss58.clone())
}

/// `taogate devnet-miner` options.
#[derive(clap::Args)]
pub struct DevnetMinerArgs {
    #[arg(long, value_parser = ["epistula", "btauth", "verathos", "openai"])]
    pub kind: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    #[arg(long)]
    pub label: Option<String>,
    /// Pause between streamed words.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    #[arg(long, value_enum, default_value = "ok")]
    pub behaviour: crate::devnet::Behaviour,
    /// Epistula: the miner's hotkey keyfile (created when missing).
    #[arg(long)]
    pub hotkey_file: Option<std::path::PathBuf>,
    /// Epistula: a validator hotkey (ss58) allowed to query; repeatable.
    #[arg(long = "allow-validator")]
    pub validators: Vec<String>,
    /// OpenAI: the Bearer key clients must present.
    #[arg(long)]
    pub api_key: Option<String>,
}

/// `taogate devnet-miner`: one stand-in provider, for tests and demos. Prints `{"url","hotkey"}`.
pub async fn devnet_miner(args: DevnetMinerArgs) -> anyhow::Result<()> {
    use crate::devnet::{Auth, StandIn};
    let key = match &args.hotkey_file {
        Some(path) if path.exists() => Hotkey::from_keyfile(path)?,
        Some(path) => {
            let key = Hotkey::generate();
            std::fs::write(path, key.keyfile_json())?;
            key
        }
        None => Hotkey::generate(),
    };
    let hotkey = key_ss58(&args.kind, &key);
    let key = Arc::new(key);
    let validators = args.validators;
    let auth = match args.kind.as_str() {
        "epistula" => Auth::Epistula {
            hotkey: key,
            validators,
        },
        "btauth" => Auth::Btauth {
            hotkey: key,
            validators,
            verifier: Arc::default(),
        },
        "verathos" => Auth::Verathos { validators },
        _ => Auth::Bearer {
            key: args
                .api_key
                .context("--api-key is required for an openai stand-in")?,
        },
    };
    let listener = TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    let stand_in = StandIn {
        label: args
            .label
            .unwrap_or_else(|| format!("{} stand-in {addr}", args.kind)),
        auth,
        delay: Duration::from_millis(args.delay_ms),
        behaviour: args.behaviour,
    };
    let server = crate::devnet::start(stand_in, listener)?;
    println!(
        "{}",
        serde_json::json!({"url": format!("http://{addr}"), "hotkey": hotkey})
    );
    server.await?;
    Ok(())
}
