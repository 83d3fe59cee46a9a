//! Upstream transports behind one trait. Every transport asks its upstream for a stream and hands
//! back an [`Opened`] stream only once the first event has arrived, so the caller can still fail
//! over to the next upstream when nothing has been received.

pub mod axon;
pub mod miners;
pub mod openai;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use crate::hop::Event;
pub use crate::hop::EventStream;
use crate::openai::ChatRequest;
use crate::openai::aggregate::completion_as_chunk;
use crate::openai::sse::{EventParser, is_error};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("upstream answered {0}: {1}")]
    Status(u16, String),
    #[error("no first byte within the deadline")]
    Timeout,
    #[error("stream broke: {0}")]
    Stream(String),
    #[error("no serving miners")]
    NoMiners,
    #[error("every miner failed: {0}")]
    AllFailed(String),
}

/// A stream that has produced its first event.
pub struct Opened {
    pub upstream: String,
    pub miner_uid: Option<u16>,
    /// Every miner uid asked for this answer (race); empty for non-miner upstreams.
    pub asked: Vec<u16>,
    /// Miners that answered, with their latency in ms (race: the winner's time to first byte;
    /// best_of: every valid answer's time to completion).
    pub answered: Vec<(u16, u64)>,
    pub events: EventStream,
}

pub trait Transport: Send + Sync {
    fn name(&self) -> &str;
    /// Sends `req` (already prepared for upstream: streamed, with usage) and waits up to
    /// `first_byte` for the first event.
    fn open<'a>(
        &'a self,
        req: &'a ChatRequest,
        first_byte: Duration,
    ) -> BoxFuture<'a, Result<Opened, UpstreamError>>;
}

/// POSTs `body` to `url` and returns the SSE payload stream once its first event has arrived.
pub async fn open_sse(
    client: &reqwest::Client,
    url: &str,
    headers: Vec<(&str, String)>,
    body: Vec<u8>,
    first_byte: Duration,
) -> Result<EventStream, UpstreamError> {
    let attempt = async {
        let mut req = client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        first_event(send(req).await?).await
    };
    tokio::time::timeout(first_byte, attempt)
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

/// Sends `req`; a non-2xx answer is an error carrying its status and the start of its body.
pub async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, UpstreamError> {
    let res = req
        .send()
        .await
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    if !res.status().is_success() {
        let status = res.status().as_u16();
        let text: String = res
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        return Err(UpstreamError::Status(status, text));
    }
    Ok(res)
}

/// A worker's non-stream answer (its headers came once an upstream answered; the completion comes
/// when whole) as an event stream: the completion as one chunk, then `[DONE]`. A body that breaks
/// or is not a completion is a stream error.
pub fn completion_events(res: reqwest::Response) -> EventStream {
    let events = async move {
        let body = res
            .bytes()
            .await
            .map_err(|e| UpstreamError::Stream(e.to_string()))?;
        let completion: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Stream(format!("not a completion: {e}")))?;
        Ok::<_, UpstreamError>(futures_util::stream::iter([
            Ok(Event::Chunk(completion_as_chunk(&completion))),
            Ok(Event::Done),
        ]))
    };
    Box::pin(futures_util::stream::once(events).flat_map(|r| match r {
        Ok(s) => s.left_stream(),
        Err(e) => futures_util::stream::iter([Err(e)]).right_stream(),
    }))
}

/// The `message` of an error event (the event itself when it has none).
fn error_message(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| payload.to_owned())
}

/// Reads a streaming response up to its first SSE event (an `{"error":…}` first event is a
/// failure) and returns the payload stream, first event included.
pub async fn first_event(res: reqwest::Response) -> Result<EventStream, UpstreamError> {
    let mut bytes = res.bytes_stream();
    let mut parser = EventParser::default();
    let mut pending = VecDeque::new();
    while pending.is_empty() {
        match bytes.next().await {
            Some(Ok(chunk)) => pending.extend(parser.feed(&chunk)),
            Some(Err(e)) => return Err(UpstreamError::Stream(e.to_string())),
            None => return Err(UpstreamError::Stream("ended before the first event".into())),
        }
    }
    if pending.front().is_some_and(|first| is_error(first)) {
        return Err(UpstreamError::Stream(
            pending.pop_front().unwrap_or_default(),
        ));
    }
    let stream = futures_util::stream::unfold(
        (bytes, parser, pending, false),
        |(mut bytes, mut parser, mut pending, mut ended)| async move {
            loop {
                if let Some(payload) = pending.pop_front() {
                    // An error event (a worker reporting that its upstream broke) ends the answer.
                    if is_error(&payload) {
                        pending.clear();
                        return Some((
                            Err(UpstreamError::Stream(error_message(&payload))),
                            (bytes, parser, pending, true),
                        ));
                    }
                    return Some((
                        Ok(Event::from_payload(payload)),
                        (bytes, parser, pending, ended),
                    ));
                }
                if ended {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => pending.extend(parser.feed(&chunk)),
                    Some(Err(e)) => {
                        ended = true;
                        return Some((
                            Err(UpstreamError::Stream(e.to_string())),
                            (bytes, parser, pending, ended),
                        ));
                    }
                    None => ended = true,
                }
            }
        },
    );
    Ok(Box::pin(stream))
}
