//! The gateway ↔ worker hop, typed: the events of an answer ([`Event`]), what a worker says about
//! the route that answered ([`RouteInfo`], carried in `x-taogate-*` headers over HTTP), and how
//! one attempt on a worker ends ([`Attempt`]). Both sides use these types; the wire formats
//! (SSE `[DONE]`, an `{"error":…}` event, the headers) are read and written only here and in the
//! SSE framing, never sniffed by the code that meters or answers.

use std::pin::Pin;

use futures_util::Stream;

use crate::openai::sse::DONE;

/// One event of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A `chat.completion.chunk` (JSON text).
    Chunk(String),
    /// The answer is complete.
    Done,
}

impl Event {
    /// The event an SSE data payload stands for (`[DONE]` ends the answer).
    pub fn from_payload(payload: String) -> Self {
        if payload == DONE {
            Self::Done
        } else {
            Self::Chunk(payload)
        }
    }
}

/// An answer's events; an error ends it (the upstream broke).
pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<Event, crate::worker::transports::UpstreamError>> + Send>>;

pub const UPSTREAM_HEADER: &str = "x-taogate-upstream";
pub const MINER_UID_HEADER: &str = "x-taogate-miner-uid";
/// The answering route's wholesale price: `{prompt},{completion}` nano-units per 1M tokens.
pub const COST_HEADER: &str = "x-taogate-upstream-cost";
/// Miners that answered and their latency: `uid:ms,uid:ms`.
pub const MINERS_ANSWERED_HEADER: &str = "x-taogate-miners-answered";
/// Every miner uid asked for the answer (a race asks several), comma-separated.
pub const MINERS_ASKED_HEADER: &str = "x-taogate-miners-asked";

/// Which route answered, and at what wholesale price.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteInfo {
    pub upstream: Option<String>,
    pub miner_uid: Option<String>,
    /// Nano-units per 1M prompt and completion tokens.
    pub cost: Option<(i64, i64)>,
}

impl RouteInfo {
    /// Read from a worker's response headers (a malformed value reads as absent).
    pub fn from_headers(header: impl Fn(&str) -> Option<String>) -> Self {
        let cost = header(COST_HEADER).and_then(|c| {
            let (p, c) = c.split_once(',')?;
            Some((p.trim().parse().ok()?, c.trim().parse().ok()?))
        });
        Self {
            upstream: header(UPSTREAM_HEADER),
            miner_uid: header(MINER_UID_HEADER),
            cost,
        }
    }

    /// The headers a worker sends.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(u) = &self.upstream {
            out.push((UPSTREAM_HEADER, u.clone()));
        }
        if let Some(uid) = &self.miner_uid {
            out.push((MINER_UID_HEADER, uid.clone()));
        }
        if let Some((p, c)) = self.cost {
            out.push((COST_HEADER, format!("{p},{c}")));
        }
        out
    }
}

/// A worker's final answer that is not an answer: the same request on another worker would get
/// the same (unknown model), or this worker's upstreams all failed (another worker may do better).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    ModelNotFound { model: String },
    NoUpstream { message: String },
}

/// How one attempt on a worker ended.
pub enum Attempt {
    Answered(EventStream, RouteInfo),
    /// The worker answered, but not with an answer.
    Refused(Refusal),
    /// The worker itself failed (unreachable, an unexpected status): counted against it.
    WorkerFailed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_info_round_trips_through_headers() {
        let info = RouteInfo {
            upstream: Some("owner".into()),
            miner_uid: Some("7".into()),
            cost: Some((1_000, 2_000)),
        };
        let headers = info.headers();
        let read = RouteInfo::from_headers(|name| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        });
        assert_eq!(read, info);
        let bad = RouteInfo::from_headers(|name| (name == COST_HEADER).then(|| "x,1".to_owned()));
        assert_eq!(bad.cost, None);
        assert_eq!(Event::from_payload(DONE.into()), Event::Done);
        assert_eq!(Event::from_payload("{}".into()), Event::Chunk("{}".into()));
    }
}
