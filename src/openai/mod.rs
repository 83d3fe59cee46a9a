//! OpenAI chat-completions wire format as taogate speaks it on every hop (client → gateway →
//! worker → upstream): the request (validated here, forwarded with unknown fields intact), SSE
//! framing, and the reassembly of a stream into a non-stream completion.

pub mod aggregate;
pub mod sse;
pub mod tokens;

pub use tokens::count_tokens;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Roles a chat message may have.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
/// Largest `max_tokens` accepted when a model sets no limit of its own.
pub const DEFAULT_MAX_TOKENS_LIMIT: i64 = 32_768;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    /// Everything else (temperature, tools, user, …) is passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A request field that breaks the rules (`param` names it, OpenAI-style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub param: String,
    pub message: String,
}

impl Invalid {
    fn new(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: param.to_owned(),
            message: message.into(),
        }
    }
}

impl ChatRequest {
    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn wants_usage_chunk(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The completion budget the client asked for, if any.
    pub fn max_output_tokens(&self) -> Option<i64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Checks what the OpenAI API checks before any work: messages present and well-formed,
    /// `max_tokens` within `1..=limit`, and `n` (when sent) 1.
    pub fn validate(&self, limit: i64) -> Result<(), Invalid> {
        if self.model.trim().is_empty() {
            return Err(Invalid::new("model", "model must not be empty"));
        }
        if self.messages.is_empty() {
            return Err(Invalid::new(
                "messages",
                "messages must contain at least one message",
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(Invalid::new(
                    &format!("messages[{i}].role"),
                    format!(
                        "unknown role `{}`; expected one of {}",
                        m.role,
                        ROLES.join(", ")
                    ),
                ));
            }
            let ok = match &m.content {
                Value::String(_) | Value::Array(_) => true,
                Value::Null => m.role == "assistant",
                _ => false,
            };
            if !ok {
                return Err(Invalid::new(
                    &format!("messages[{i}].content"),
                    "content must be a string or an array of content parts",
                ));
            }
        }
        // One choice per request: the hold and the completion bound cover one answer.
        match self.extra.get("n") {
            None | Some(Value::Null) => {}
            Some(n) if n.as_i64() == Some(1) => {}
            Some(_) => {
                return Err(Invalid::new(
                    "n",
                    "n must be 1: taogate answers one choice per request (send n requests for n answers)",
                ));
            }
        }
        for (param, value) in [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ] {
            if let Some(n) = value
                && !(1..=limit).contains(&n)
            {
                return Err(Invalid::new(
                    param,
                    format!("{param} must be between 1 and {limit}"),
                ));
            }
        }
        Ok(())
    }

    /// The request as sent upstream: always streamed, always with a usage chunk, so that every hop
    /// can meter what it delivers.
    pub fn for_upstream(&self) -> ChatRequest {
        let mut req = self.clone();
        req.stream = Some(true);
        let mut opts = req.stream_options.unwrap_or_default();
        opts.include_usage = Some(true);
        req.stream_options = Some(opts);
        req
    }

    /// The request as a gateway sends a non-stream request to a worker: not streamed (the worker
    /// streams from upstream and answers the whole completion at once).
    pub fn for_worker_collect(&self) -> ChatRequest {
        let mut req = self.clone();
        req.stream = Some(false);
        req.stream_options = None;
        req
    }

    /// Text of all messages (with the tool calls they carry) and of the tool definitions, for
    /// prompt token estimates.
    pub fn prompt_text(&self) -> String {
        let mut out = self
            .extra
            .get("tools")
            .map(Value::to_string)
            .unwrap_or_default();
        for m in &self.messages {
            if let Some(calls) = m.extra.get("tool_calls") {
                out.push_str(&calls.to_string());
            }
            match &m.content {
                Value::String(s) => out.push_str(s),
                Value::Array(parts) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            out.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            out.push('\n');
        }
        out
    }

    /// The last user message as plain text (what the dev miners echo).
    pub fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| match &m.content {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    }
}

/// Plain text of a message's content (a string, or the text parts of an array).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// A quick token estimate (≈ 4 characters per token) for admission — limits and holds are decided
/// before any answer exists; usage is counted by the upstream or [`count_tokens`].
pub fn estimate_tokens(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_text_counts_tool_definitions_and_calls() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "tools": [{"type": "function", "function": {"name": "lookup_weather"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "lookup_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            ],
        }))
        .unwrap();
        let text = req.prompt_text();
        for part in ["lookup_weather", "Oslo", "hi", "sunny"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }
}
