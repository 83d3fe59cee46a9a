//! Miner pools: miners from a metagraph snapshot serving OpenAI-style `POST /v1/chat/completions`,
//! each request signed for that miner with one of the validator signing schemes —
//! Epistula v2 (SN1), `btauth/1` (bittensor 11) or Verathos-style `X-Validator-*` (SN96).
//! Strategy race: `race` miners are asked at once; the first to produce a valid first event wins
//! and the others are cancelled (their futures dropped, closing the connections).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, select_ok};

use super::{Opened, Transport, UpstreamError, open_sse};
use crate::openai::ChatRequest;
use crate::worker::axon::SynapseMapping;
use crate::worker::btauth::NonceSource;
use crate::worker::hotkey::Hotkey;
use crate::worker::metagraph::{Neuron, Snapshot};
use crate::worker::{btauth, epistula, verathos};

/// Path miners serve chat completions on.
const CHAT_PATH: &str = "/v1/chat/completions";

#[derive(Clone, Debug)]
pub enum Scheme {
    Epistula,
    Btauth,
    Verathos,
    /// Legacy bt.Axon synapses (bittensor ≤ 10), mapped by the given synapse description.
    Axon(SynapseMapping),
}

pub struct MinerPool {
    name: String,
    scheme: Scheme,
    metagraph_file: PathBuf,
    snapshot: RwLock<Snapshot>,
    race: usize,
    top_k: usize,
    hotkey: Arc<Hotkey>,
    nonces: NonceSource,
    client: reqwest::Client,
}

impl MinerPool {
    pub fn new(
        name: &str,
        scheme: Scheme,
        metagraph_file: &str,
        race: usize,
        top_k: usize,
        hotkey: Arc<Hotkey>,
        client: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let metagraph_file = PathBuf::from(metagraph_file);
        let snapshot = Snapshot::load(&metagraph_file)?;
        Ok(Self {
            name: name.to_owned(),
            scheme,
            metagraph_file,
            snapshot: RwLock::new(snapshot),
            race: race.max(1),
            top_k,
            hotkey,
            nonces: NonceSource::default(),
            client,
        })
    }

    /// Re-reads the snapshot file; keeps the last good copy on failure.
    pub fn reload(&self) {
        match Snapshot::load(&self.metagraph_file) {
            Ok(s) => *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = s,
            Err(e) => {
                tracing::warn!(upstream = %self.name, error = %e, "metagraph reload failed; keeping the last good copy")
            }
        }
    }

    /// The signing headers of one request to `miner`.
    fn headers(&self, miner: &Neuron, body: &[u8]) -> Vec<(&'static str, String)> {
        let now = chrono::Utc::now();
        match self.scheme {
            Scheme::Epistula => {
                epistula::sign(&self.hotkey, &miner.hotkey, body, now.timestamp_millis())
            }
            Scheme::Btauth => {
                let nonce = self
                    .nonces
                    .next(now.timestamp_nanos_opt().unwrap_or_default() as u64);
                btauth::sign(&self.hotkey, "POST", CHAT_PATH, body, &miner.hotkey, nonce)
            }
            Scheme::Verathos => {
                verathos::sign(&self.hotkey, "POST", CHAT_PATH, body, now.timestamp())
            }
            Scheme::Axon(_) => Vec::new(),
        }
    }

    /// One signed synapse request to an axon, read back as chat events.
    async fn open_axon(
        &self,
        mapping: &SynapseMapping,
        miner: &Neuron,
        req: &ChatRequest,
        first_byte: Duration,
    ) -> Result<super::EventStream, UpstreamError> {
        let roles = req.messages.iter().map(|m| m.role.clone()).collect();
        let messages = req
            .messages
            .iter()
            .map(|m| crate::openai::content_text(&m.content))
            .collect();
        let body = mapping.body(roles, messages);
        let hash = mapping.body_hash(&body);
        let nonce = self
            .nonces
            .next(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64);
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .client
            .post(format!("{}/{}", miner.base_url(), mapping.synapse))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).map_err(|e| UpstreamError::Connect(e.to_string()))?);
        for (k, v) in mapping.headers(
            &self.hotkey,
            (&miner.ip, miner.port, &miner.hotkey),
            &hash,
            nonce,
            &uuid,
        ) {
            request = request.header(k, v);
        }
        let prompt = crate::openai::estimate_tokens(&req.prompt_text());
        super::axon::open(request, mapping.streaming, &req.model, prompt, first_byte).await
    }
}

impl Transport for MinerPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn open<'a>(
        &'a self,
        req: &'a ChatRequest,
        first_byte: Duration,
    ) -> BoxFuture<'a, Result<Opened, UpstreamError>> {
        Box::pin(async move {
            let miners = self
                .snapshot
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .sample(self.top_k, self.race);
            if miners.is_empty() {
                return Err(UpstreamError::NoMiners);
            }
            let body =
                serde_json::to_vec(req).map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let attempts = miners.into_iter().map(|miner| {
                let body = body.clone();
                Box::pin(async move {
                    let events = match &self.scheme {
                        Scheme::Axon(mapping) => {
                            self.open_axon(mapping, &miner, req, first_byte).await
                        }
                        _ => {
                            let headers = self.headers(&miner, &body);
                            let url = format!("{}{CHAT_PATH}", miner.base_url());
                            open_sse(&self.client, &url, headers, body, first_byte).await
                        }
                    }
                    .map_err(|e| format!("uid {}: {e}", miner.uid))?;
                    Ok::<_, String>(Opened {
                        upstream: self.name.clone(),
                        miner_uid: Some(miner.uid),
                        events,
                    })
                })
            });
            match select_ok(attempts).await {
                Ok((opened, _losers)) => Ok(opened),
                Err(last) => Err(UpstreamError::AllFailed(last)),
            }
        })
    }
}
