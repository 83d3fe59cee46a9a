//! Reading a bt.Axon answer as an OpenAI chat stream. A `StreamingSynapse` answers with raw bytes
//! (no SSE framing; SN1 miners wrote UTF-8 text), a plain synapse with its JSON (`completion`).
//! Either becomes `chat.completion.chunk` events — role, text, stop, an estimated usage chunk,
//! `[DONE]` — so the rest of the path is the same as for every other upstream.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{EventStream, UpstreamError};
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

    /// Stop chunk, usage chunk (counted from the text) and `[DONE]`.
    fn ending(&self, prompt_tokens: i64, completion_chars: &str) -> Vec<String> {
        let completion = count_tokens(completion_chars);
        vec![
            self.chunk(json!({}), Some("stop")),
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}})
            .to_string(),
            crate::openai::sse::DONE.to_owned(),
        ]
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
    streaming: bool,
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
            let text = synapse
                .get("completion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            pending.push_back(chunker.text(&text));
            pending.extend(chunker.ending(prompt_tokens, &text));
            return Ok(
                Box::pin(futures_util::stream::iter(pending.into_iter().map(Ok))) as EventStream,
            );
        }
        let mut bytes = res.bytes_stream();
        let mut carry = Vec::new();
        let mut all = String::new();
        // The first byte decides that this axon answers: wait for it here, within the deadline.
        loop {
            match bytes.next().await {
                Some(Ok(chunk)) => {
                    carry.extend_from_slice(&chunk);
                    let text = take_utf8(&mut carry);
                    if !text.is_empty() {
                        all.push_str(&text);
                        pending.push_back(chunker.text(&text));
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
        let state = (bytes, carry, all, pending, chunker, false);
        let stream = futures_util::stream::unfold(
            state,
            move |(mut bytes, mut carry, mut all, mut pending, chunker, mut ended)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), (bytes, carry, all, pending, chunker, ended)));
                    }
                    if ended {
                        return None;
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => {
                            carry.extend_from_slice(&chunk);
                            let text = take_utf8(&mut carry);
                            if !text.is_empty() {
                                all.push_str(&text);
                                pending.push_back(chunker.text(&text));
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
                            let ending = chunker.ending(prompt_tokens, &all);
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
    use super::take_utf8;

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
