//! The SSE stream returned to clients: worker events re-framed as they arrive, the usage chunk
//! dropped unless the client asked for it, and the request settled exactly once — when the stream
//! ends, breaks, hits its deadline, or is dropped because the client went away (then the upstream
//! is cancelled by dropping its connection, and what was delivered so far is recorded).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;

use crate::metering::{Admitted, Delivered, Meter, Status};
use crate::openai::sse::{self, DONE};
use crate::pool::Answer;

pub struct Metered {
    answer: Answer,
    include_usage: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    delivered: Delivered,
    settle: Option<(Meter, Admitted)>,
    queued_done: bool,
}

impl Metered {
    pub fn new(
        answer: Answer,
        include_usage: bool,
        deadline: std::time::Duration,
        meter: Meter,
        admitted: Admitted,
    ) -> Self {
        let delivered = Delivered {
            worker: Some(answer.worker.clone()),
            upstream: answer.upstream.clone(),
            miner_uid: answer.miner_uid.clone(),
            ..Default::default()
        };
        Self {
            answer,
            include_usage,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            delivered,
            settle: Some((meter, admitted)),
            queued_done: false,
        }
    }

    fn finish(&mut self, status: Status) {
        if let Some((meter, admitted)) = self.settle.take() {
            meter.settle(admitted, status, std::mem::take(&mut self.delivered));
        }
    }

    fn fail(&mut self, message: &str) -> Bytes {
        self.finish(Status::UpstreamError);
        self.queued_done = true;
        sse::event(&serde_json::json!({"error": {"message": message, "type": "api_error", "code": "upstream_error", "param": null}}).to_string())
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.queued_done {
            this.queued_done = false;
            this.settle = None;
            return Poll::Ready(Some(Ok(sse::event(DONE))));
        }
        if this.settle.is_none() {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let event = this.fail("the answer did not finish within the deadline");
            return Poll::Ready(Some(Ok(event)));
        }
        loop {
            match this.answer.events.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(payload))) => {
                    if payload == DONE {
                        this.finish(Status::Ok);
                        return Poll::Ready(Some(Ok(sse::event(DONE))));
                    }
                    if let Some(usage) = sse::usage_of(&payload) {
                        this.delivered.usage = Some(usage);
                        if !this.include_usage && sse::is_usage_only(&payload) {
                            continue;
                        }
                    }
                    this.delivered.first_byte.get_or_insert_with(Instant::now);
                    this.delivered.text.push_str(&sse::delta_text(&payload));
                    return Poll::Ready(Some(Ok(sse::event(&payload))));
                }
                Poll::Ready(Some(Err(e))) => {
                    let event = this.fail(&format!("the upstream stream broke: {e}"));
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(None) => {
                    this.finish(Status::Ok);
                    return Poll::Ready(Some(Ok(sse::event(DONE))));
                }
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish(Status::ClientDisconnected);
    }
}
