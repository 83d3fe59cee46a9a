//! Turns a stream of `chat.completion.chunk` payloads into one `chat.completion` object, for
//! clients that did not ask to stream (upstreams are always asked to stream), and back: a
//! completion as the one chunk that carries all of it (how a worker's non-stream answer rejoins
//! the gateway's event path). Kept per choice: role, content, refusal, tool calls (their
//! `arguments` pieces joined by call index), the deprecated `function_call` (its pieces joined),
//! logprobs and finish reason; per completion: id, created, model, system fingerprint, service
//! tier and usage.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Usage;

/// Top-level fields taken from the first chunk that has them.
const KEPT: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

/// One `chat.completion.chunk` as far as the aggregator reads it: typed, its text borrowed from
/// the payload where it has no escapes, no tree built. A payload of another shape (a number where
/// text belongs, say) is read by [`ChunkIn::lenient`] instead, which skips what it cannot use.
#[derive(Deserialize, Default)]
struct ChunkIn<'a> {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    service_tier: Option<Value>,
    #[serde(borrow)]
    choices: Option<Vec<ChoiceIn<'a>>>,
    usage: Option<Usage>,
}

#[derive(Deserialize, Default)]
struct ChoiceIn<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<DeltaIn<'a>>,
    logprobs: Option<Map<String, Value>>,
    finish_reason: Option<Value>,
}

#[derive(Deserialize, Default)]
struct DeltaIn<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<CallIn<'a>>>,
    #[serde(borrow)]
    function_call: Option<FunctionIn<'a>>,
}

#[derive(Deserialize, Default)]
struct CallIn<'a> {
    index: Option<u64>,
    id: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(borrow)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize, Default)]
struct FunctionIn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl<'a> ChunkIn<'a> {
    /// The typed reading, else the lenient one, else nothing (not JSON: `[DONE]`).
    fn read(payload: &'a str, tree: &'a mut Option<Value>) -> Option<Self> {
        if let Ok(chunk) = serde_json::from_str(payload) {
            return Some(chunk);
        }
        Some(Self::lenient(
            tree.insert(serde_json::from_str(payload).ok()?),
        ))
    }

    /// Whatever of a chunk's tree has the expected types; the rest is left out.
    fn lenient(v: &'a Value) -> Self {
        let kept = |field: &str| v.get(field).filter(|v| !v.is_null()).cloned();
        let text =
            |v: &'a Value, field: &str| v.get(field).and_then(Value::as_str).map(Cow::Borrowed);
        let function = |f: Option<&'a Value>| {
            f.filter(|f| f.is_object()).map(|f| FunctionIn {
                name: text(f, "name"),
                arguments: text(f, "arguments"),
            })
        };
        let choice = |c: &'a Value| {
            let delta = c.get("delta").unwrap_or(&Value::Null);
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            ChoiceIn {
                index: c.get("index").and_then(Value::as_u64),
                delta: Some(DeltaIn {
                    role: text(delta, "role"),
                    content: text(delta, "content"),
                    refusal: text(delta, "refusal"),
                    tool_calls: calls.map(|calls| {
                        calls
                            .iter()
                            .map(|call| CallIn {
                                index: call.get("index").and_then(Value::as_u64),
                                id: call.get("id").cloned(),
                                kind: call.get("type").cloned(),
                                function: function(call.get("function")),
                            })
                            .collect()
                    }),
                    function_call: function(delta.get("function_call")),
                }),
                logprobs: c.get("logprobs").and_then(Value::as_object).cloned(),
                finish_reason: c.get("finish_reason").cloned(),
            }
        };
        Self {
            id: kept("id"),
            created: kept("created"),
            model: kept("model"),
            system_fingerprint: kept("system_fingerprint"),
            service_tier: kept("service_tier"),
            choices: v
                .get("choices")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().map(choice).collect()),
            usage: v
                .get("usage")
                .filter(|u| !u.is_null())
                .and_then(|u| serde_json::from_value(u.clone()).ok()),
        }
    }
}

#[derive(Default)]
struct ToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    /// The deprecated single `function_call` (the `functions` parameter): name and arguments.
    function_call: Option<(String, String)>,
    /// `content` and `refusal` token logprobs, each list joined across chunks.
    logprobs: Option<Map<String, Value>>,
    finish_reason: Option<Value>,
}

impl Choice {
    fn push(&mut self, c: ChoiceIn<'_>) {
        let delta = c.delta.unwrap_or_default();
        if let Some(role) = delta.role {
            self.role = Some(role.into_owned());
        }
        for (text, into) in [
            (delta.content, &mut self.content),
            (delta.refusal, &mut self.refusal),
        ] {
            if let Some(text) = text {
                into.get_or_insert_default().push_str(&text);
            }
        }
        for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
            let index = call.index.unwrap_or(position as u64);
            let into = self.tool_calls.entry(index).or_default();
            for (v, into) in [(call.id, &mut into.id), (call.kind, &mut into.kind)] {
                if let Some(v) = v.filter(|v| !v.is_null()) {
                    *into = Some(v);
                }
            }
            let function = call.function.unwrap_or_default();
            into.name.push_str(function.name.as_deref().unwrap_or(""));
            into.arguments
                .push_str(function.arguments.as_deref().unwrap_or(""));
        }
        if let Some(call) = delta.function_call {
            let (name, arguments) = self.function_call.get_or_insert_default();
            name.push_str(call.name.as_deref().unwrap_or(""));
            arguments.push_str(call.arguments.as_deref().unwrap_or(""));
        }
        if let Some(logprobs) = c.logprobs {
            let into = self.logprobs.get_or_insert_default();
            for (field, list) in logprobs {
                let Value::Array(list) = list else {
                    continue;
                };
                match into.entry(field).or_insert_with(|| json!([])) {
                    Value::Array(joined) => joined.extend(list),
                    other => *other = Value::Array(list),
                }
            }
        }
        if let Some(reason) = c.finish_reason.filter(|r| !r.is_null()) {
            self.finish_reason = Some(reason);
        }
    }

    /// The text generated (content, refusal, tool and function call names and arguments): what
    /// the tokenizer counts when nobody reported usage.
    fn text(&self) -> String {
        let calls = self.tool_calls.values();
        let function = self.function_call.iter();
        [self.content.as_deref(), self.refusal.as_deref()]
            .into_iter()
            .flatten()
            .chain(calls.flat_map(|t| [t.name.as_str(), t.arguments.as_str()]))
            .chain(function.flat_map(|(name, arguments)| [name.as_str(), arguments.as_str()]))
            .collect()
    }

    fn finish(self, index: u64) -> Value {
        let calls: Vec<Value> = self
            .tool_calls
            .into_values()
            .map(|t| {
                json!({
                    "id": t.id.unwrap_or_else(|| json!(format!("call_{}", uuid::Uuid::new_v4().simple()))),
                    "type": t.kind.unwrap_or_else(|| json!("function")),
                    "function": {"name": t.name, "arguments": t.arguments},
                })
            })
            .collect();
        // A message that is only tool calls, a function call or a refusal has `content: null`,
        // as OpenAI sends it.
        let called = !calls.is_empty() || self.function_call.is_some();
        let content = match self.content {
            Some(text) if !text.is_empty() => json!(text),
            _ if called || self.refusal.is_some() => Value::Null,
            text => json!(text.unwrap_or_default()),
        };
        let mut message = json!({
            "role": self.role.unwrap_or_else(|| "assistant".into()),
            "content": content,
        });
        if let Some(refusal) = self.refusal {
            message["refusal"] = json!(refusal);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        if let Some((name, arguments)) = self.function_call {
            message["function_call"] = json!({"name": name, "arguments": arguments});
        }
        let mut choice = json!({
            "index": index,
            "message": message,
            "finish_reason": self.finish_reason.unwrap_or_else(|| json!("stop")),
        });
        if let Some(logprobs) = self.logprobs {
            choice["logprobs"] = Value::Object(logprobs);
        }
        choice
    }
}

#[derive(Default)]
pub struct Aggregator {
    kept: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Usage>,
}

impl Aggregator {
    /// Folds one chunk payload in (non-JSON payloads such as `[DONE]` are ignored).
    pub fn push(&mut self, payload: &str) {
        let mut tree = None;
        let Some(chunk) = ChunkIn::read(payload, &mut tree) else {
            return;
        };
        let kept = [
            chunk.id,
            chunk.created,
            chunk.model,
            chunk.system_fingerprint,
            chunk.service_tier,
        ];
        for (field, value) in KEPT.into_iter().zip(kept) {
            if let Some(value) = value.filter(|v| !v.is_null())
                && !self.kept.contains_key(field)
            {
                self.kept.insert(field.to_owned(), value);
            }
        }
        self.usage = chunk.usage.or(self.usage);
        for c in chunk.choices.into_iter().flatten() {
            let index = c.index.unwrap_or(0);
            self.choices.entry(index).or_default().push(c);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Replaces the usage the completion will carry (the gateway answers with what it billed).
    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    /// Text generated so far, over all choices (content, refusals and tool calls).
    pub fn text(&self) -> String {
        self.choices.values().map(Choice::text).collect()
    }

    /// The completion object, with `usage` from the stream, else `fallback`, else none (a worker
    /// leaves counting to the gateway when the upstream reported nothing).
    pub fn finish(self, fallback: Option<Usage>) -> Value {
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| c.finish(index))
            .collect();
        let mut kept = self.kept;
        let mut take = |field: &str| kept.remove(field);
        let mut done = json!({
            "id": take("id").unwrap_or_else(|| json!(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()))),
            "object": "chat.completion",
            "created": take("created").unwrap_or_else(|| json!(chrono::Utc::now().timestamp())),
            "model": take("model").unwrap_or(Value::Null),
            "choices": choices,
        });
        for (field, value) in kept {
            done[field] = value;
        }
        if let Some(usage) = self.usage.or(fallback) {
            done["usage"] = json!(usage);
        }
        done
    }
}

/// A `chat.completion` as one `chat.completion.chunk` payload: each choice's message becomes its
/// delta (tool calls numbered, as deltas number them), its logprobs ride along; the kept
/// top-level fields and usage are kept. [`Aggregator::push`] of the result and
/// [`Aggregator::finish`] give the completion back.
pub fn completion_as_chunk(completion: &Value) -> String {
    let choices: Vec<Value> = completion
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let mut delta = c.get("message").cloned().unwrap_or(json!({}));
            if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for (index, call) in calls.iter_mut().enumerate() {
                    if let Some(call) = call.as_object_mut() {
                        call.entry("index").or_insert(json!(index));
                    }
                }
            }
            let mut choice = json!({
                "index": c.get("index").cloned().unwrap_or(json!(0)),
                "delta": delta,
                "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
            });
            if let Some(logprobs) = c.get("logprobs").filter(|l| !l.is_null()) {
                choice["logprobs"] = logprobs.clone();
            }
            choice
        })
        .collect();
    let mut chunk = json!({"object": "chat.completion.chunk", "choices": choices});
    for field in KEPT {
        chunk[field] = completion.get(field).cloned().unwrap_or(Value::Null);
    }
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
    fn keeps_tool_calls_refusals_and_logprobs() {
        let mut a = Aggregator::default();
        for p in [
            r#"{"id":"c3","created":9,"model":"m","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c3","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c3","choices":[{"index":1,"delta":{"role":"assistant","refusal":"I can"},"logprobs":{"refusal":[{"token":"I","logprob":-0.1}]},"finish_reason":null}]}"#,
            r#"{"id":"c3","choices":[{"index":1,"delta":{"refusal":"not."},"logprobs":{"refusal":[{"token":" can","logprob":-0.2}]},"finish_reason":"stop"}]}"#,
        ] {
            a.push(p);
        }
        assert!(
            a.text().contains(r#"get_weather{"city":"Oslo"}"#),
            "{}",
            a.text()
        );
        let done = a.finish(None);
        assert_eq!(done["system_fingerprint"], "fp_1");
        let calls = &done["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls[0]["id"], "call_a");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Oslo"}"#);
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert!(
            calls[0].get("index").is_none(),
            "a message's tool calls carry no index"
        );
        assert_eq!(done["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
        let refused = &done["choices"][1];
        assert_eq!(refused["message"]["refusal"], "I cannot.");
        assert_eq!(refused["message"]["content"], Value::Null);
        assert_eq!(refused["logprobs"]["refusal"][1]["token"], " can");
        // The one-chunk form carries all of it back.
        let mut again = Aggregator::default();
        again.push(&completion_as_chunk(&done));
        assert_eq!(again.finish(None), done);
    }

    #[test]
    fn joins_a_legacy_function_call() {
        let mut a = Aggregator::default();
        for p in [
            r#"{"id":"c4","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":""}},"finish_reason":null}]}"#,
            r#"{"id":"c4","choices":[{"index":0,"delta":{"function_call":{"arguments":"{\"city\":"}},"finish_reason":null}]}"#,
            r#"{"id":"c4","choices":[{"index":0,"delta":{"function_call":{"arguments":"\"Oslo\"}"}},"finish_reason":"function_call"}]}"#,
        ] {
            a.push(p);
        }
        assert_eq!(a.text(), r#"get_weather{"city":"Oslo"}"#);
        let done = a.finish(None);
        let message = &done["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["function_call"]["name"], "get_weather");
        assert_eq!(message["function_call"]["arguments"], r#"{"city":"Oslo"}"#);
        assert_eq!(done["choices"][0]["finish_reason"], "function_call");
        let mut again = Aggregator::default();
        again.push(&completion_as_chunk(&done));
        assert_eq!(again.finish(None), done);
    }

    #[test]
    fn odd_shapes_are_read_leniently_and_escapes_kept() {
        let mut a = Aggregator::default();
        for p in [
            // Escaped text (owned, not borrowed) on the typed reading.
            r#"{"id":"c5","created":3,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"line\none \"q\""},"finish_reason":null}]}"#,
            // Odd types: the typed reading fails, the lenient one keeps what has the expected type
            // (a string index counts as choice 0, a numeric content is skipped, a string `created`
            // of a later chunk does not replace the first one's).
            r#"{"id":"c5","created":"9","choices":[{"index":"0","delta":{"content":5},"logprobs":7,"finish_reason":null}],"usage":{"prompt_tokens":"x"}}"#,
            r#"{"id":"c5","choices":[{"index":0,"delta":{"content":" end","function_call":"nope"},"finish_reason":{"kind":"stop"}}],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}"#,
            "not json",
        ] {
            a.push(p);
        }
        assert_eq!(a.usage().map(|u| u.total_tokens), Some(5));
        let done = a.finish(None);
        assert_eq!(done["created"], 3);
        assert_eq!(
            done["choices"][0]["message"]["content"],
            "line\none \"q\" end"
        );
        assert_eq!(done["choices"][0]["finish_reason"]["kind"], "stop");
        assert!(done["choices"][0].get("logprobs").is_none(), "{done}");
        assert!(done["choices"][0]["message"].get("function_call").is_none());
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
