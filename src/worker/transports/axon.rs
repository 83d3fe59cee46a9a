//! Reading a bt.Axon answer as an OpenAI chat stream. A `StreamingSynapse` answers with raw bytes
//! (no SSE framing; SN1 miners wrote UTF-8 text), a plain synapse with its JSON (`completion`).
//! Either becomes `chat.completion.chunk` events — role, text, stop, an estimated usage chunk,
//! `[DONE]` — so the rest of the path is the same as for every other upstream.
//!
//! A synapse has no `max_tokens`, so the request's is enforced here ([`Budget`]): the text is cut
//! at that many tokens (o200k), the answer ends with `finish_reason: "length"`, and the axon's
//! stream is dropped (closing its connection).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{EventStream, UpstreamError};
use crate::hop::Event;
use crate::openai::count_tokens;

struct Chunker {
    id: String,
    model: String,
    created: i64,
}

impl Chunker {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    fn text(&self, text: &str) -> String {
        self.chunk(json!({"content": text}), None)
    }

    /// Stop chunk (`stop`, or `length` when the budget cut it), usage chunk (counted from the
    /// text) and `[DONE]`.
    fn ending(&self, prompt_tokens: i64, completion_chars: &str, cut: bool) -> Vec<String> {
        let completion = count_tokens(completion_chars);
        vec![
            self.chunk(json!({}), Some(if cut { "length" } else { "stop" })),
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}})
            .to_string(),
            crate::openai::sse::DONE.to_owned(),
        ]
    }
}

/// The request's `max_tokens` for an upstream that cannot be told it.
#[derive(Clone, Copy, Debug)]
pub struct Budget(Option<i64>);

impl Budget {
    pub fn new(max_tokens: Option<i64>) -> Self {
        Self(max_tokens.filter(|m| *m >= 0))
    }

    /// How much of `text` may follow `sent` (already within budget), and whether it was cut.
    fn admit<'a>(&self, sent: &str, text: &'a str) -> (&'a str, bool) {
        let Some(max) = self.0 else {
            return (text, false);
        };
        // A token holds at least one character: below `max` characters nothing needs counting.
        if (sent.chars().count() + text.chars().count()) as i64 <= max {
            return (text, false);
        }
        let fits = |n: usize| {
            let end = text.char_indices().nth(n).map_or(text.len(), |(i, _)| i);
            count_tokens(&format!("{sent}{}", &text[..end])) <= max
        };
        let total = text.chars().count();
        if fits(total) {
            return (text, false);
        }
        // The longest prefix of `text` that keeps the whole within `max` tokens.
        let (mut lo, mut hi) = (0, total);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let end = text.char_indices().nth(lo).map_or(text.len(), |(i, _)| i);
        (&text[..end], true)
    }
}

/// Decodes as much of `buf` as is valid UTF-8, keeping an incomplete trailing sequence.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    match std::str::from_utf8(buf) {
        Ok(s) => {
            let s = s.to_owned();
            buf.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            let rest = buf.split_off(e.valid_up_to());
            let s = String::from_utf8_lossy(buf).into_owned();
            *buf = rest;
            s
        }
        Err(_) => {
            let s = String::from_utf8_lossy(buf).into_owned();
            buf.clear();
            s
        }
    }
}

/// POSTs a signed synapse and returns its answer as chat events once the first bytes arrived.
pub async fn open(
    req: reqwest::RequestBuilder,
    (streaming, budget): (bool, Budget),
    model: &str,
    prompt_tokens: i64,
    first_byte: Duration,
) -> Result<EventStream, UpstreamError> {
    let chunker = Chunker {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        model: model.to_owned(),
        created: chrono::Utc::now().timestamp(),
    };
    let attempt = async move {
        let res = super::send(req).await?;
        let mut pending: VecDeque<String> =
            VecDeque::from([chunker.chunk(json!({"role": "assistant", "content": ""}), None)]);
        if !streaming {
            let synapse: Value = res
                .json()
                .await
                .map_err(|e| UpstreamError::Stream(e.to_string()))?;
            let full = synapse
                .get("completion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (text, cut) = budget.admit("", full);
            pending.push_back(chunker.text(text));
            pending.extend(chunker.ending(prompt_tokens, text, cut));
            return Ok(Box::pin(futures_util::stream::iter(
                pending.into_iter().map(|p| Ok(Event::from_payload(p))),
            )) as EventStream);
        }
        let mut bytes = res.bytes_stream();
        let mut carry = Vec::new();
        let mut all = String::new();
        let mut ended = false;
        // The first byte decides that this axon answers: wait for it here, within the deadline.
        loop {
            match bytes.next().await {
                Some(Ok(chunk)) => {
                    carry.extend_from_slice(&chunk);
                    let text = take_utf8(&mut carry);
                    if !text.is_empty() {
                        let (text, cut) = budget.admit(&all, &text);
                        all.push_str(text);
                        pending.push_back(chunker.text(text));
                        if cut {
                            pending.extend(chunker.ending(prompt_tokens, &all, true));
                            ended = true;
                        }
                        break;
                    }
                }
                Some(Err(e)) => return Err(UpstreamError::Stream(e.to_string())),
                None => {
                    return Err(UpstreamError::Stream(
                        "the axon closed the stream without a byte".into(),
                    ));
                }
            }
        }
        let state = (bytes, carry, all, pending, chunker, ended);
        let stream = futures_util::stream::unfold(
            state,
            move |(mut bytes, mut carry, mut all, mut pending, chunker, mut ended)| async move {
                loop {
                    if let Some(payload) = pending.pop_front() {
                        let event = Ok(Event::from_payload(payload));
                        return Some((event, (bytes, carry, all, pending, chunker, ended)));
                    }
                    if ended {
                        return None;
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => {
                            carry.extend_from_slice(&chunk);
                            let text = take_utf8(&mut carry);
                            if !text.is_empty() {
                                let (text, cut) = budget.admit(&all, &text);
                                all.push_str(text);
                                pending.push_back(chunker.text(text));
                                if cut {
                                    // Out of budget: stop reading (the axon's stream is dropped).
                                    ended = true;
                                    pending.extend(chunker.ending(prompt_tokens, &all, true));
                                }
                            }
                        }
                        Some(Err(e)) => {
                            ended = true;
                            return Some((
                                Err(UpstreamError::Stream(e.to_string())),
                                (bytes, carry, all, pending, chunker, ended),
                            ));
                        }
                        None => {
                            ended = true;
                            let ending = chunker.ending(prompt_tokens, &all, false);
                            pending.extend(ending);
                        }
                    }
                }
            },
        );
        Ok(Box::pin(stream) as EventStream)
    };
    tokio::time::timeout(first_byte, attempt)
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::{Budget, take_utf8};
    use crate::openai::count_tokens;

    #[test]
    fn the_budget_cuts_at_max_tokens() {
        let unlimited = Budget::new(None);
        assert_eq!(
            unlimited.admit("", "one two three"),
            ("one two three", false)
        );
        let one = Budget::new(Some(1));
        let (text, cut) = one.admit("", "Hello there, friend");
        assert!(cut);
        assert_eq!(count_tokens(text), 1, "{text:?}");
        assert_eq!(text, "Hello");
        let (more, cut) = one.admit(text, " there");
        assert_eq!((more, cut), ("", true));
        let five = Budget::new(Some(5));
        assert_eq!(
            five.admit("", "a b"),
            ("a b", false),
            "short text is not counted"
        );
        let (text, cut) = five.admit("", "one two three four five six seven");
        assert!(cut);
        assert_eq!(count_tokens(text), 5, "{text:?}");
    }

    #[test]
    fn utf8_split_across_chunks_is_carried() {
        let text = "é日🎉".as_bytes();
        let mut buf = text[..3].to_vec();
        assert_eq!(take_utf8(&mut buf), "é");
        buf.extend_from_slice(&text[3..]);
        assert_eq!(take_utf8(&mut buf), "日🎉");
        assert!(buf.is_empty());
    }
}
