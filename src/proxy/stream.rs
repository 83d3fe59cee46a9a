//! The metered event stream behind every streamed answer (SSE and WebSocket): worker events passed
//! on as they arrive, the usage chunk dropped unless the client asked for it, and the request
//! settled exactly once — when the stream ends, breaks, hits its deadline, or is dropped because the
//! client went away (then the upstream is cancelled by dropping its connection, and what was
//! delivered so far is recorded). Items are what the client is sent ([`Outgoing`]), `Done` last.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;

use crate::billing::settle::{Admitted, Delivered, Status};
use crate::hop::Event;
use crate::openai::Usage;
use crate::openai::sse::{self, DONE};
use crate::pool::Answer;

/// What a streamed answer sends its client next.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A `chat.completion.chunk` (JSON text).
    Chunk(String),
    /// The answer failed midway: the OpenAI error object (`message`, `type`, `code`, `param`).
    Failed(serde_json::Value),
    Done,
}

impl Outgoing {
    /// As a server-sent event.
    pub fn sse(&self) -> bytes::Bytes {
        match self {
            Self::Chunk(payload) => sse::event(payload),
            Self::Failed(error) => sse::event(&serde_json::json!({ "error": error }).to_string()),
            Self::Done => sse::event(DONE),
        }
    }
}

pub struct Metered {
    answer: Answer,
    include_usage: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The shutdown grace ran out: end the stream, settled as `shutdown`.
    cancelled: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    delivered: Delivered,
    settle: Option<Admitted>,
    queued_done: bool,
    usage: Option<Usage>,
}

impl Metered {
    pub fn new(
        answer: Answer,
        include_usage: bool,
        deadline: std::time::Duration,
        admitted: Admitted,
    ) -> Self {
        let delivered = Delivered::from_answer(&answer);
        Self {
            answer,
            include_usage,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            cancelled: Box::pin(admitted.cancelled()),
            delivered,
            settle: Some(admitted),
            queued_done: false,
            usage: None,
        }
    }

    /// The upstream's usage, once its usage chunk has gone by.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finish(&mut self, status: Status) {
        if let Some(admitted) = self.settle.take() {
            admitted.settle_with(status, std::mem::take(&mut self.delivered));
        }
    }

    fn fail(&mut self, message: &str) -> Outgoing {
        self.fail_as(Status::UpstreamError, message)
    }

    fn fail_as(&mut self, status: Status, message: &str) -> Outgoing {
        self.finish(status);
        self.queued_done = true;
        Outgoing::Failed(
            serde_json::json!({"message": message, "type": "api_error", "code": "upstream_error", "param": null}),
        )
    }
}

impl Stream for Metered {
    type Item = Outgoing;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.queued_done {
            this.queued_done = false;
            this.settle = None;
            return Poll::Ready(Some(Outgoing::Done));
        }
        if this.settle.is_none() {
            return Poll::Ready(None);
        }
        if this.cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(this.fail_as(
                Status::Shutdown,
                "the server is shutting down; retry the request",
            )));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(
                this.fail("the answer did not finish within the deadline"),
            ));
        }
        loop {
            match this.answer.events.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(Event::Done))) => {
                    this.finish(Status::Ok);
                    return Poll::Ready(Some(Outgoing::Done));
                }
                Poll::Ready(Some(Ok(Event::Chunk(payload)))) => {
                    if let Some(usage) = sse::usage_of(&payload) {
                        this.delivered.usage = Some(usage);
                        this.usage = Some(usage);
                        if !this.include_usage && sse::is_usage_only(&payload) {
                            continue;
                        }
                    }
                    this.delivered.first_byte.get_or_insert_with(Instant::now);
                    this.delivered.text.push_str(&sse::delta_text(&payload));
                    return Poll::Ready(Some(Outgoing::Chunk(payload)));
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(
                        this.fail(&format!("the upstream stream broke: {e}")),
                    ));
                }
                Poll::Ready(None) => {
                    this.finish(Status::Ok);
                    return Poll::Ready(Some(Outgoing::Done));
                }
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // Dropped unfinished: the client went away, or the server is shutting down.
        if let Some(status) = self
            .settle
            .as_ref()
            .map(|a| a.dropped_status(Status::ClientDisconnected))
        {
            self.finish(status);
        }
    }
}
