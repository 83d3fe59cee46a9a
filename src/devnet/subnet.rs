//! A whole local subnet on loopback, started in process by `taogate dev` and by tests: three
//! Epistula miners, an OpenAI-compatible owner gateway, a metagraph snapshot listing the miners,
//! and a worker (with a btwallet-format hotkey keyfile; announced through the worker registry)
//! routing
//! `taogate-demo` → [miners (race 2), owner gateway] and `taogate-owner` → [owner gateway].
//! Must be called inside an actix system: the servers are spawned on it.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use super::{Auth, Behaviour, StandIn};
use crate::auth::secrets;
use crate::pool::registry::Registry;
use crate::worker::config::{RouteConfig, UpstreamConfig, WorkerConfig};
use crate::worker::hotkey::Hotkey;
use crate::worker::metagraph::{Neuron, Snapshot};
use crate::worker::{self, Worker};

pub const MINERS: usize = 3;

/// What the gateway needs to use the local subnet (also written to `<dir>/subnet.json`, for
/// demos and `bench/`; dev secrets only).
#[derive(serde::Serialize)]
pub struct LocalSubnet {
    pub worker_url: String,
    pub worker_secret: String,
    pub models: Vec<&'static str>,
    pub miner_urls: Vec<String>,
    pub owner_url: String,
    pub owner_api_key: String,
}

fn bind() -> anyhow::Result<(TcpListener, String)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", l.local_addr()?);
    Ok((l, url))
}

/// Loads the dev worker hotkey from its keyfile, creating the keyfile on first use.
fn worker_hotkey(dir: &Path) -> anyhow::Result<Hotkey> {
    let path = Hotkey::keyfile_path(
        &dir.join("wallets").display().to_string(),
        "devnet",
        "worker",
    );
    if !path.exists() {
        std::fs::create_dir_all(path.parent().context("keyfile dir")?)?;
        std::fs::write(&path, Hotkey::generate().keyfile_json())?;
    }
    Hotkey::from_keyfile(&path)
}

/// Starts the stand-ins and the worker, which announces itself in `registry` every `heartbeat.0`
/// (valid `heartbeat.1`); `delay` is the pause between streamed words.
pub async fn spawn(
    dir: &Path,
    delay: Duration,
    registry: &Registry,
    heartbeat: (Duration, Duration),
) -> anyhow::Result<LocalSubnet> {
    std::fs::create_dir_all(dir)?;
    let hotkey = Arc::new(worker_hotkey(dir)?);
    let mut neurons = Vec::new();
    let mut miner_urls = Vec::new();
    for uid in 0..MINERS {
        let miner_key = Arc::new(Hotkey::generate());
        let (listener, url) = bind()?;
        let port = listener.local_addr()?.port();
        let stand_in = StandIn {
            label: format!("miner {}", uid + 1),
            auth: Auth::Epistula {
                hotkey: miner_key.clone(),
                validators: vec![hotkey.ss58.clone()],
            },
            delay,
            behaviour: Behaviour::Ok,
        };
        actix_web::rt::spawn(super::start(stand_in, listener)?);
        neurons.push(Neuron {
            uid: uid as u16 + 1,
            hotkey: miner_key.ss58.clone(),
            ip: "127.0.0.1".into(),
            port,
            incentive: 1.0 / (uid as f64 + 1.0),
            validator_permit: false,
        });
        miner_urls.push(url);
    }
    let metagraph = dir.join("metagraph.json");
    std::fs::write(
        &metagraph,
        serde_json::to_string_pretty(&Snapshot {
            netuid: 1,
            block: 0,
            neurons,
        })?,
    )?;

    let owner_key = secrets::random_token(24);
    let owner_key_copy = owner_key.clone();
    let (listener, owner_url) = bind()?;
    let owner = StandIn {
        label: "the owner gateway".into(),
        auth: Auth::Bearer {
            key: owner_key.clone(),
        },
        delay,
        behaviour: Behaviour::Ok,
    };
    actix_web::rt::spawn(super::start(owner, listener)?);

    let owner_upstream = UpstreamConfig::Openai {
        name: "owner-gateway".into(),
        base_url: format!("{owner_url}/v1"),
        api_key_env: None,
        api_key_file: None,
        api_key: Some(owner_key),
        model: None,
    };
    let miners = UpstreamConfig::Epistula {
        name: "local-miners".into(),
        metagraph_file: metagraph.display().to_string(),
        race: 2,
        top_k: 16,
    };
    let worker_secret = secrets::random_token(24);
    let cfg = WorkerConfig {
        listen: "127.0.0.1:0".parse()?,
        secret: SecretString::from(worker_secret.clone()),
        announce_url: String::new(),
        wallet_path: dir.join("wallets").display().to_string(),
        wallet_name: "devnet".into(),
        hotkey_name: "worker".into(),
        first_byte_timeout_ms: 5_000,
        request_timeout_secs: 300,
        routes: vec![
            RouteConfig {
                model: "taogate-demo".into(),
                upstreams: vec![miners, owner_upstream.clone()],
            },
            RouteConfig {
                model: "taogate-owner".into(),
                upstreams: vec![owner_upstream],
            },
        ],
    };
    let worker = Arc::new(Worker::build(&cfg, hotkey)?);
    worker.spawn_metagraph_refresh(Duration::from_secs(30));
    let (listener, worker_url) = bind()?;
    actix_web::rt::spawn(worker::start(worker, listener, 1, 4 << 20)?);
    registry.announce(&worker_url, heartbeat.1).await?;
    registry.spawn_announcer(worker_url.clone(), heartbeat.0, heartbeat.1);
    let subnet = LocalSubnet {
        worker_url,
        worker_secret,
        models: vec!["taogate-demo", "taogate-owner"],
        miner_urls,
        owner_url,
        owner_api_key: owner_key_copy,
    };
    std::fs::write(
        dir.join("subnet.json"),
        serde_json::to_string_pretty(&subnet)?,
    )?;
    Ok(subnet)
}
