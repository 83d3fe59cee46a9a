//! A whole local subnet on loopback, started in process by `taogate dev` and by tests: miners for
//! each protocol (three Epistula, two `btauth/1`, two Verathos-style, two legacy bt.Axon), each set in its own
//! metagraph snapshot, an OpenAI-compatible owner gateway, and a worker (with a btwallet-format
//! hotkey keyfile; announced through the worker registry) routing
//! `taogate-demo` → [Epistula miners (race 2), owner gateway] (a failover chain),
//! `taogate-btauth` → btauth miners, `taogate-verathos` → Verathos miners, `taogate-axon` → two
//! bt.Axon stand-ins (SN1's `StreamPromptingSynapse`) and `taogate-owner` → owner gateway. Must be called inside an actix system.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use super::sites::Site;
use super::{Auth, Behaviour, StandIn};
use crate::auth::secrets;
use crate::pool::registry::Registry;
use crate::worker::config::{
    AxonPoolConfig, MinerPoolConfig, RouteConfig, UpstreamConfig, WorkerConfig,
};
use crate::worker::hotkey::Hotkey;
use crate::worker::metagraph::{Neuron, Snapshot};
use crate::worker::{self, Worker};

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
    /// The worker itself, for a gateway in this process to call directly.
    #[serde(skip)]
    pub worker: Option<Arc<Worker>>,
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

/// Adds `count` miners checking `scheme`'s signatures from `validator` to `sites`; writes their
/// metagraph to `<dir>/<file>` and returns (its path, the miners' URLs).
fn add_miners(
    sites: &mut Vec<(TcpListener, Site)>,
    dir: &Path,
    file: &str,
    count: usize,
    auth: impl Fn(Arc<Hotkey>) -> Auth,
    delay: Duration,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut neurons = Vec::new();
    let mut urls = Vec::new();
    for i in 0..count {
        let uid = i as u16 + 1;
        let key = Arc::new(Hotkey::generate());
        let (listener, url) = bind()?;
        let port = listener.local_addr()?.port();
        let stand_in = StandIn {
            label: format!("miner {uid}"),
            auth: auth(key.clone()),
            delay,
            behaviour: Behaviour::Ok,
        };
        sites.push((listener, Site::Miner(Arc::new(stand_in))));
        let incentive = 1.0 / f64::from(uid);
        neurons.push(Neuron {
            uid,
            hotkey: key.ss58.clone(),
            ip: "127.0.0.1".into(),
            port,
            incentive,
            validator_permit: false,
        });
        urls.push(url);
    }
    let path = dir.join(file);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Snapshot {
            netuid: 1,
            block: 0,
            neurons,
        })?,
    )?;
    Ok((path.display().to_string(), urls))
}

/// Adds `count` bt.Axon stand-ins serving SN1's `StreamPromptingSynapse`; like [`add_miners`].
fn add_axons(
    sites: &mut Vec<(TcpListener, Site)>,
    dir: &Path,
    count: usize,
    validators: &[String],
    delay: Duration,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut neurons = Vec::new();
    let mut urls = Vec::new();
    for i in 0..count {
        let uid = i as u16 + 1;
        let key = Arc::new(Hotkey::generate());
        let (listener, url) = bind()?;
        let port = listener.local_addr()?.port();
        let axon = super::axon::AxonStandIn {
            label: format!("miner {uid}"),
            hotkey: key.clone(),
            validators: validators.to_vec(),
            mapping: Default::default(),
            delay,
            nonces: Default::default(),
        };
        sites.push((listener, Site::Axon(Arc::new(axon))));
        neurons.push(Neuron {
            uid,
            hotkey: key.ss58.clone(),
            ip: "127.0.0.1".into(),
            port,
            incentive: 1.0 / f64::from(uid),
            validator_permit: false,
        });
        urls.push(url);
    }
    let path = dir.join("metagraph-axon.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Snapshot {
            netuid: 1,
            block: 0,
            neurons,
        })?,
    )?;
    Ok((path.display().to_string(), urls))
}

fn pool(name: &str, metagraph_file: String) -> MinerPoolConfig {
    MinerPoolConfig {
        terms: Default::default(),
        name: name.into(),
        metagraph_file,
        subtensor_url: None,
        netuid: 1,
        race: 2,
        top_k: 16,
        strategy: Default::default(),
    }
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
    let validators = vec![hotkey.ss58.clone()];
    let mut sites = Vec::new();
    let v = validators.clone();
    let (epistula_graph, mut miner_urls) = add_miners(
        &mut sites,
        dir,
        "metagraph.json",
        3,
        |key| Auth::Epistula {
            hotkey: key,
            validators: v.clone(),
        },
        delay,
    )?;
    let v = validators.clone();
    let (btauth_graph, urls) = add_miners(
        &mut sites,
        dir,
        "metagraph-btauth.json",
        2,
        |key| Auth::Btauth {
            hotkey: key,
            validators: v.clone(),
            verifier: Arc::default(),
        },
        delay,
    )?;
    miner_urls.extend(urls);
    let (axon_graph, urls) = add_axons(&mut sites, dir, 2, &validators, delay)?;
    miner_urls.extend(urls);
    let v = validators.clone();
    let (verathos_graph, urls) = add_miners(
        &mut sites,
        dir,
        "metagraph-verathos.json",
        2,
        |_| Auth::Verathos {
            validators: v.clone(),
        },
        delay,
    )?;
    miner_urls.extend(urls);

    let owner_key = secrets::random_token(24);
    let (listener, owner_url) = bind()?;
    let owner = StandIn {
        label: "the owner gateway".into(),
        auth: Auth::Bearer {
            key: owner_key.clone(),
        },
        delay,
        behaviour: Behaviour::Ok,
    };
    sites.push((listener, Site::Miner(Arc::new(owner))));
    actix_web::rt::spawn(super::sites::serve(sites)?);

    let owner_upstream = UpstreamConfig::Openai {
        terms: Default::default(),
        name: "owner-gateway".into(),
        base_url: format!("{owner_url}/v1"),
        api_key_env: None,
        api_key_file: None,
        api_key: Some(owner_key.clone()),
        model: None,
    };
    let worker_secret = secrets::random_token(24);
    let route = |model: &str, upstreams: Vec<UpstreamConfig>| RouteConfig {
        model: model.into(),
        upstreams,
    };
    let cfg = WorkerConfig {
        route_eject_secs: 10,
        listen: "127.0.0.1:0".parse()?,
        secret: SecretString::from(worker_secret.clone()),
        announce_url: String::new(),
        wallet_path: dir.join("wallets").display().to_string(),
        wallet_name: "devnet".into(),
        hotkey_name: "worker".into(),
        // A slow stand-in (`--token-delay-ms`) sends its first word after the delay too.
        first_byte_timeout_ms: 5_000u64.max(3 * delay.as_millis() as u64),
        request_timeout_secs: 300,
        routes: vec![
            route(
                "taogate-demo",
                vec![
                    UpstreamConfig::Epistula(pool("local-miners", epistula_graph)),
                    owner_upstream.clone(),
                ],
            ),
            route(
                "taogate-btauth",
                vec![UpstreamConfig::Btauth(pool("btauth-miners", btauth_graph))],
            ),
            route(
                "taogate-verathos",
                vec![UpstreamConfig::Verathos(pool(
                    "verathos-miners",
                    verathos_graph,
                ))],
            ),
            route(
                "taogate-axon",
                vec![UpstreamConfig::Axon(AxonPoolConfig {
                    terms: Default::default(),
                    name: "axon-miners".into(),
                    metagraph_file: axon_graph,
                    subtensor_url: None,
                    netuid: 1,
                    race: 2,
                    top_k: 16,
                    strategy: Default::default(),
                    synapse: Default::default(),
                })],
            ),
            route("taogate-owner", vec![owner_upstream]),
        ],
    };
    let worker = Arc::new(Worker::build(&cfg, hotkey)?);
    worker.spawn_metagraph_refresh(Duration::from_secs(30));
    let (listener, worker_url) = bind()?;
    actix_web::rt::spawn(worker::start(worker.clone(), listener, 1, 4 << 20)?);
    registry.announce(&worker_url, heartbeat.1).await?;
    registry.spawn_announcer(worker_url.clone(), heartbeat.0, heartbeat.1);
    let subnet = LocalSubnet {
        worker_url,
        worker_secret,
        models: vec![
            "taogate-demo",
            "taogate-btauth",
            "taogate-verathos",
            "taogate-axon",
            "taogate-owner",
        ],
        miner_urls,
        owner_url,
        owner_api_key: owner_key,
        worker: Some(worker),
    };
    std::fs::write(
        dir.join("subnet.json"),
        serde_json::to_string_pretty(&subnet)?,
    )?;
    Ok(subnet)
}
