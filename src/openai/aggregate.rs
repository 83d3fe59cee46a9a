//! Turns a stream of `chat.completion.chunk` payloads into one `chat.completion` object, for
//! clients that did not ask to stream (upstreams are always asked to stream), and back: a
//! completion as the one chunk that carries all of it (how a worker's non-stream answer rejoins
//! the gateway's event path).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Usage;

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: String,
    finish_reason: Option<Value>,
}

#[derive(Default)]
pub struct Aggregator {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Usage>,
}

impl Aggregator {
    /// Folds one chunk payload in (non-JSON payloads such as `[DONE]` are ignored).
    pub fn push(&mut self, payload: &str) {
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            return;
        };
        self.id = self.id.take().or_else(|| v.get("id").cloned());
        self.created = self.created.take().or_else(|| v.get("created").cloned());
        self.model = self.model.take().or_else(|| v.get("model").cloned());
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = serde_json::from_value(u.clone()).ok().or(self.usage);
        }
        for c in v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let choice = self.choices.entry(index).or_default();
            if let Some(role) = c.pointer("/delta/role").and_then(Value::as_str) {
                choice.role = Some(role.to_owned());
            }
            if let Some(text) = c.pointer("/delta/content").and_then(Value::as_str) {
                choice.content.push_str(text);
            }
            if let Some(reason) = c.get("finish_reason").filter(|r| !r.is_null()) {
                choice.finish_reason = Some(reason.clone());
            }
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Text generated so far, over all choices.
    pub fn text(&self) -> String {
        self.choices.values().map(|c| c.content.as_str()).collect()
    }

    /// The completion object, with `usage` from the stream, else `fallback`, else none (a worker
    /// leaves counting to the gateway when the upstream reported nothing).
    pub fn finish(self, fallback: Option<Usage>) -> Value {
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                json!({
                    "index": index,
                    "message": {"role": c.role.unwrap_or_else(|| "assistant".into()), "content": c.content},
                    "finish_reason": c.finish_reason.unwrap_or_else(|| json!("stop")),
                })
            })
            .collect();
        let mut done = json!({
            "id": self.id.unwrap_or_else(|| json!(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()))),
            "object": "chat.completion",
            "created": self.created.unwrap_or_else(|| json!(chrono::Utc::now().timestamp())),
            "model": self.model.unwrap_or(Value::Null),
            "choices": choices,
        });
        if let Some(usage) = self.usage.or(fallback) {
            done["usage"] = json!(usage);
        }
        done
    }
}

/// A `chat.completion` as one `chat.completion.chunk` payload: each choice's message becomes its
/// delta; id, created, model and usage are kept. [`Aggregator::push`] of the result and
/// [`Aggregator::finish`] give the completion back.
pub fn completion_as_chunk(completion: &Value) -> String {
    let choices: Vec<Value> = completion
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "index": c.get("index").cloned().unwrap_or(json!(0)),
                "delta": c.get("message").cloned().unwrap_or(json!({})),
                "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let mut chunk = json!({
        "id": completion.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion.chunk",
        "created": completion.get("created").cloned().unwrap_or(Value::Null),
        "model": completion.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
    });
    if let Some(usage) = completion.get("usage").filter(|u| !u.is_null()) {
        chunk["usage"] = usage.clone();
    }
    chunk.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_a_stream() {
        let mut a = Aggregator::default();
        for p in [
            r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hello "},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"world"},"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            "[DONE]",
        ] {
            a.push(p);
        }
        let done = a.finish(None);
        assert_eq!(done["id"], "c1");
        assert_eq!(done["object"], "chat.completion");
        assert_eq!(done["choices"][0]["message"]["content"], "Hello world");
        assert_eq!(done["choices"][0]["finish_reason"], "stop");
        assert_eq!(done["usage"]["total_tokens"], 5);
        // One chunk carries the whole completion back into an event stream, unchanged.
        let mut again = Aggregator::default();
        again.push(&completion_as_chunk(&done));
        assert_eq!(again.usage().map(|u| u.total_tokens), Some(5));
        assert_eq!(again.finish(None), done);
    }

    #[test]
    fn usage_is_left_out_when_nobody_counted() {
        let mut a = Aggregator::default();
        a.push(r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#);
        let done = a.finish(None);
        assert!(done.get("usage").is_none(), "{done}");
        let mut again = Aggregator::default();
        again.push(&completion_as_chunk(&done));
        assert_eq!(again.usage(), None);
        let fallback = Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            total_tokens: 2,
        };
        assert_eq!(again.finish(Some(fallback))["usage"]["total_tokens"], 2);
    }
}
