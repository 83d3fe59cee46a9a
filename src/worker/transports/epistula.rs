//! `epistula`: miners from a metagraph snapshot serving OpenAI-style `POST /v1/chat/completions`,
//! each request signed with Epistula v2 headers for that miner's hotkey. Strategy race: `race`
//! miners are asked at once; the first to produce a valid first event wins and the others are
//! cancelled (their futures dropped, closing the connections).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, select_ok};

use super::{Opened, Transport, UpstreamError, open_sse};
use crate::openai::ChatRequest;
use crate::worker::epistula;
use crate::worker::hotkey::Hotkey;
use crate::worker::metagraph::Snapshot;

pub struct Epistula {
    name: String,
    metagraph_file: PathBuf,
    snapshot: RwLock<Snapshot>,
    race: usize,
    top_k: usize,
    hotkey: Arc<Hotkey>,
    client: reqwest::Client,
}

impl Epistula {
    pub fn new(
        name: &str,
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
            metagraph_file,
            snapshot: RwLock::new(snapshot),
            race: race.max(1),
            top_k,
            hotkey,
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
}

impl Transport for Epistula {
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
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let headers = epistula::sign(&self.hotkey, &miner.hotkey, &body, now_ms);
                    let url = format!("{}/v1/chat/completions", miner.base_url());
                    let events = open_sse(&self.client, &url, headers, body, first_byte)
                        .await
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
