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
use crate::hop::Event;
use crate::openai::ChatRequest;
use crate::outbound::ThreadClients;
use crate::worker::axon::SynapseMapping;
use crate::worker::btauth::NonceSource;
use crate::worker::chain;
use crate::worker::config::MinerPoolConfig;
use crate::worker::config::Strategy;
use crate::worker::health::MinerHealth;
use crate::worker::hotkey::Hotkey;
use crate::worker::metagraph::{Neuron, Snapshot};
use crate::worker::metrics::WorkerMetrics;
use crate::worker::scoring::{self, Candidate, DefaultScorer};
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
    /// (node URL, netuid) when the metagraph comes from the chain.
    subtensor: Option<(String, u16)>,
    snapshot: RwLock<Snapshot>,
    race: usize,
    top_k: usize,
    hotkey: Arc<Hotkey>,
    nonces: NonceSource,
    health: MinerHealth,
    strategy: Strategy,
    metrics: Arc<WorkerMetrics>,
    client: ThreadClients,
}

impl MinerPool {
    /// A pool over `cfg`'s metagraph: the snapshot file, or — with `subtensor_url` — the chain,
    /// with the file as the persisted last good copy (loaded at start when present).
    pub fn new(
        cfg: &MinerPoolConfig,
        scheme: Scheme,
        hotkey: Arc<Hotkey>,
        client: ThreadClients,
        metrics: Arc<WorkerMetrics>,
    ) -> anyhow::Result<Self> {
        let metagraph_file = PathBuf::from(&cfg.metagraph_file);
        let snapshot = match (&cfg.subtensor_url, Snapshot::load(&metagraph_file)) {
            (_, Ok(s)) => s,
            (Some(_), Err(_)) => Snapshot {
                netuid: cfg.netuid,
                block: 0,
                neurons: vec![],
            },
            (None, Err(e)) => return Err(e),
        };
        Ok(Self {
            name: cfg.name.clone(),
            scheme,
            metagraph_file,
            subtensor: cfg.subtensor_url.clone().map(|url| (url, cfg.netuid)),
            snapshot: RwLock::new(snapshot),
            race: cfg.race.max(1),
            top_k: cfg.top_k,
            hotkey,
            nonces: NonceSource::default(),
            health: MinerHealth::default(),
            strategy: cfg.strategy,
            metrics,
            client,
        })
    }

    /// Refreshes the snapshot from the chain (persisting it to the file) or from the file; on any
    /// failure the last good copy stays in use.
    pub async fn refresh(&self) {
        let fresh = match &self.subtensor {
            Some((url, netuid)) => {
                match chain::fetch_snapshot(&self.client.client(), url, *netuid).await {
                    Ok(s) => {
                        if let Err(e) = persist(&self.metagraph_file, &s) {
                            tracing::warn!(upstream = %self.name, error = %e, "could not persist the metagraph");
                        }
                        Ok(s)
                    }
                    Err(e) => Err(e),
                }
            }
            None => Snapshot::load(&self.metagraph_file),
        };
        match fresh {
            Ok(s) => *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = s,
            Err(e) => {
                tracing::warn!(upstream = %self.name, error = %e, "metagraph refresh failed; keeping the last good copy")
            }
        }
    }

    /// The current snapshot's neurons.
    pub fn neurons(&self) -> Vec<Neuron> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .neurons
            .clone()
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
            .client()
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
        let prompt = crate::openai::count_tokens(&req.prompt_text());
        let budget = super::axon::Budget::new(req.max_output_tokens());
        super::axon::open(
            request,
            (mapping.streaming, budget),
            &req.model,
            prompt,
            first_byte,
        )
        .await
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
            let candidates = self
                .snapshot
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .top_k(self.top_k);
            let miners = self.health.choose(candidates, self.race);
            let asked: Vec<u16> = miners.iter().map(|m| m.uid).collect();
            if miners.is_empty() {
                return Err(UpstreamError::NoMiners);
            }
            let body =
                serde_json::to_vec(req).map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let attempts = miners.into_iter().map(|miner| {
                let body = body.clone();
                let asked = asked.clone();
                Box::pin(async move {
                    let started = std::time::Instant::now();
                    let events = match &self.scheme {
                        Scheme::Axon(mapping) => {
                            self.open_axon(mapping, &miner, req, first_byte).await
                        }
                        _ => {
                            let headers = self.headers(&miner, &body);
                            let url = format!("{}{CHAT_PATH}", miner.base_url());
                            open_sse(&self.client.client(), &url, headers, body, first_byte).await
                        }
                    }
                    .map_err(|e| {
                        self.health.record_failure(&miner.hotkey);
                        self.metrics
                            .miner_requests
                            .with_label_values(&[&self.name, "failed"])
                            .inc();
                        format!("uid {}: {e}", miner.uid)
                    })?;
                    self.health.record_success(&miner.hotkey, started.elapsed());
                    self.metrics
                        .miner_requests
                        .with_label_values(&[&self.name, "answered"])
                        .inc();
                    self.metrics
                        .first_byte
                        .with_label_values(&[&self.name])
                        .observe(started.elapsed().as_secs_f64());
                    Ok::<_, String>(Opened {
                        upstream: self.name.clone(),
                        miner_uid: Some(miner.uid),
                        asked,
                        answered: vec![(miner.uid, started.elapsed().as_millis() as u64)],
                        events,
                    })
                })
            });
            match self.strategy {
                Strategy::Race => match select_ok(attempts).await {
                    Ok((opened, _losers)) => Ok(opened),
                    Err(last) => Err(UpstreamError::AllFailed(last)),
                },
                Strategy::BestOf => {
                    let started = std::time::Instant::now();
                    let candidates = futures_util::future::join_all(
                        attempts.map(|a| read_whole(a, started, first_byte * 2)),
                    )
                    .await;
                    let (candidates, streams): (Vec<Candidate>, Vec<Vec<String>>) =
                        candidates.into_iter().flatten().unzip();
                    let chosen = scoring::best(&DefaultScorer, &candidates)
                        .ok_or_else(|| UpstreamError::AllFailed("no valid answer".into()))?;
                    let answered: Vec<(u16, u64)> = candidates
                        .iter()
                        .filter(|c| c.valid)
                        .map(|c| (c.uid, c.latency.as_millis() as u64))
                        .collect();
                    tracing::info!(upstream = %self.name, miners.asked = ?asked, miners.answered = ?answered,
                        miner.chosen = candidates[chosen].uid, "best_of chose uid {}", candidates[chosen].uid);
                    let chunks = streams.into_iter().nth(chosen).unwrap_or_default();
                    let events = chunks.into_iter().map(Event::Chunk).chain([Event::Done]);
                    Ok(Opened {
                        upstream: self.name.clone(),
                        miner_uid: Some(candidates[chosen].uid),
                        asked,
                        answered,
                        events: Box::pin(futures_util::stream::iter(events.map(Ok))),
                    })
                }
            }
        })
    }
}

/// Writes the snapshot atomically (temp file, then rename).
fn persist(path: &std::path::Path, snapshot: &Snapshot) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(snapshot)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads one attempt's answer to the end within `deadline` (counted from `started`): the scored
/// candidate and its events (without `[DONE]`). `None` when the miner did not answer at all.
async fn read_whole(
    attempt: impl std::future::Future<Output = Result<Opened, String>>,
    started: std::time::Instant,
    deadline: Duration,
) -> Option<(Candidate, Vec<String>)> {
    use futures_util::StreamExt;
    let read = async {
        let opened = attempt.await.ok()?;
        let uid = opened.miner_uid.unwrap_or_default();
        let (mut events, mut agg, mut done) = (
            Vec::new(),
            crate::openai::aggregate::Aggregator::default(),
            false,
        );
        let mut stream = opened.events;
        while let Some(Ok(event)) = stream.next().await {
            let Event::Chunk(p) = event else {
                done = true;
                break;
            };
            agg.push(&p);
            events.push(p);
        }
        let text = agg.text();
        Some((
            Candidate {
                uid,
                valid: done && !text.is_empty(),
                text,
                latency: started.elapsed(),
            },
            events,
        ))
    };
    tokio::time::timeout(deadline.saturating_sub(started.elapsed()), read)
        .await
        .ok()
        .flatten()
}
