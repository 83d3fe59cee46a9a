//! `openai`: an OpenAI-compatible HTTPS endpoint with a Bearer key — how a reseller buys from a
//! subnet owner's gateway (Chutes, Targon, …). The key comes from an env var, a file, or (dev
//! only) the config; the model name may be mapped.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use super::{Opened, Transport, UpstreamError, open_sse};
use crate::openai::ChatRequest;
use crate::outbound::ThreadClients;

pub struct OpenAi {
    name: String,
    url: String,
    key: SecretString,
    model: Option<String>,
    client: ThreadClients,
}

impl OpenAi {
    pub fn new(
        name: &str,
        base_url: &str,
        key_env: Option<&str>,
        key_file: Option<&str>,
        key: Option<&str>,
        model: Option<String>,
        client: ThreadClients,
    ) -> anyhow::Result<Self> {
        let key = match (key_env, key_file, key) {
            (Some(var), _, _) => std::env::var(var)
                .with_context(|| format!("upstream {name}: env var {var} is not set"))?,
            (None, Some(path), _) => std::fs::read_to_string(path)
                .with_context(|| format!("upstream {name}: reading key file {path}"))?
                .trim()
                .to_owned(),
            (None, None, Some(k)) => k.to_owned(),
            (None, None, None) => {
                bail!("upstream {name}: set api_key_env, api_key_file or api_key")
            }
        };
        Ok(Self {
            name: name.to_owned(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            key: SecretString::from(key),
            model,
            client,
        })
    }
}

impl Transport for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn open<'a>(
        &'a self,
        req: &'a ChatRequest,
        first_byte: Duration,
    ) -> BoxFuture<'a, Result<Opened, UpstreamError>> {
        Box::pin(async move {
            let mut body = req.clone();
            if let Some(m) = &self.model {
                body.model = m.clone();
            }
            let bytes =
                serde_json::to_vec(&body).map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let auth = format!("Bearer {}", self.key.expose_secret());
            let events = open_sse(
                &self.client.client(),
                &self.url,
                vec![("authorization", auth)],
                bytes,
                first_byte,
            )
            .await?;
            Ok(Opened {
                asked: vec![],
                answered: vec![],
                upstream: self.name.clone(),
                miner_uid: None,
                events,
            })
        })
    }
}
