//! `[worker]` configuration: where it listens, the shared secret the gateway presents, the hotkey
//! (bittensor wallet), and per model an ordered list of upstreams tried in turn.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub listen: std::net::SocketAddr,
    /// Bearer secret the gateway must present (never exposed publicly).
    pub secret: SecretString,
    /// URL announced to gateways; empty = `http://<bound address>`.
    #[serde(default)]
    pub announce_url: String,
    pub wallet_path: String,
    pub wallet_name: String,
    pub hotkey_name: String,
    /// Time allowed for an upstream to produce its first event before the next one is tried.
    pub first_byte_timeout_ms: u64,
    /// Per-request deadline for the whole answer.
    pub request_timeout_secs: u64,
    /// A route failing 3 times in a row is skipped for this long (then one probe).
    #[serde(default = "default_route_eject_secs")]
    pub route_eject_secs: u64,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn default_route_eject_secs() -> u64 {
    10
}

/// How a route takes part in a model's routing, and what it costs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTerms {
    /// Lower is tried first; default: the route's position in the list (plain failover order).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Share of traffic among routes of equal priority (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Wholesale price paid for this route, nano-units per 1M prompt / completion tokens
    /// (recorded with the usage, for margin reporting).
    #[serde(default)]
    pub prompt_nano_per_mtok: i64,
    #[serde(default)]
    pub completion_nano_per_mtok: i64,
}

impl RouteTerms {
    /// The wholesale price as (prompt, completion) nano-units per 1M tokens, if the route has one.
    pub fn cost(&self) -> Option<(i64, i64)> {
        let priced = self.prompt_nano_per_mtok != 0 || self.completion_nano_per_mtok != 0;
        priced.then_some((self.prompt_nano_per_mtok, self.completion_nano_per_mtok))
    }
}

/// One model's upstreams, in order of preference.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub model: String,
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamConfig {
    /// An OpenAI-compatible endpoint with a Bearer key (a subnet owner's gateway).
    Openai {
        name: String,
        base_url: String,
        /// Name of the environment variable holding the key …
        #[serde(default)]
        api_key_env: Option<String>,
        /// … or a file holding it …
        #[serde(default)]
        api_key_file: Option<String>,
        /// … or the key itself (dev only).
        #[serde(default)]
        api_key: Option<String>,
        /// Model name at this upstream, when it differs from ours.
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        terms: RouteTerms,
    },
    /// Miners from a metagraph snapshot, queried with Epistula v2 signed requests; `race` miners
    /// at once, the first valid stream wins.
    Epistula(MinerPoolConfig),
    /// The same with bittensor 11 `btauth/1` signatures.
    Btauth(MinerPoolConfig),
    /// The same with Verathos-style `X-Validator-*` signatures.
    Verathos(MinerPoolConfig),
    /// Legacy bt.Axon synapses (bittensor ≤ 10); `synapse` describes the mapping (default: SN1's
    /// `StreamPromptingSynapse`).
    Axon(AxonPoolConfig),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MinerPoolConfig {
    pub name: String,
    #[serde(default)]
    pub terms: RouteTerms,
    /// The snapshot file; with `subtensor_url`, where the last good chain read is kept.
    pub metagraph_file: String,
    /// A subtensor node's HTTP JSON-RPC URL: read the metagraph from the chain.
    #[serde(default)]
    pub subtensor_url: Option<String>,
    #[serde(default)]
    pub netuid: u16,
    #[serde(default = "default_race")]
    pub race: usize,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default)]
    pub strategy: Strategy,
}

/// How the `race` miners asked at once become one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The first valid stream wins; the others are cancelled.
    #[default]
    Race,
    /// Every answer is read to the end (within twice the first-byte deadline), scored, and the
    /// best is returned (see `worker::scoring`).
    BestOf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AxonPoolConfig {
    pub name: String,
    #[serde(default)]
    pub terms: RouteTerms,
    pub metagraph_file: String,
    #[serde(default)]
    pub subtensor_url: Option<String>,
    #[serde(default)]
    pub netuid: u16,
    #[serde(default = "default_race")]
    pub race: usize,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub synapse: crate::worker::axon::SynapseMapping,
}

impl AxonPoolConfig {
    pub fn pool(&self) -> MinerPoolConfig {
        MinerPoolConfig {
            name: self.name.clone(),
            terms: self.terms.clone(),
            metagraph_file: self.metagraph_file.clone(),
            subtensor_url: self.subtensor_url.clone(),
            netuid: self.netuid,
            race: self.race,
            top_k: self.top_k,
            strategy: self.strategy,
        }
    }
}

fn default_race() -> usize {
    2
}

fn default_top_k() -> usize {
    16
}

impl UpstreamConfig {
    pub fn name(&self) -> &str {
        match self {
            Self::Openai { name, .. } => name,
            Self::Epistula(p) | Self::Btauth(p) | Self::Verathos(p) => &p.name,
            Self::Axon(a) => &a.name,
        }
    }

    /// The `kind` the upstream was configured with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Openai { .. } => "openai",
            Self::Epistula(_) => "epistula",
            Self::Btauth(_) => "btauth",
            Self::Verathos(_) => "verathos",
            Self::Axon(_) => "axon",
        }
    }

    pub fn terms(&self) -> &RouteTerms {
        match self {
            Self::Openai { terms, .. } => terms,
            Self::Epistula(p) | Self::Btauth(p) | Self::Verathos(p) => &p.terms,
            Self::Axon(a) => &a.terms,
        }
    }
}
