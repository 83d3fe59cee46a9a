//! Server-sent events as OpenAI streams them: `data: <json>\n\n` … `data: [DONE]\n\n`. The parser
//! only frames events and peeks at `usage`; chunks are otherwise passed through as bytes.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::Usage;

pub const DONE: &str = "[DONE]";

/// Incremental SSE framer: feed bytes, get complete `data:` payloads.
#[derive(Default)]
pub struct EventParser {
    buf: BytesMut,
}

impl EventParser {
    /// Appends `chunk` and returns every complete event's data payload (multi-line data joined by `\n`).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf) {
            let raw = self.buf.split_to(end + sep);
            // The common event, one `data:` line of UTF-8, is copied out as it is.
            if let Ok(text) = std::str::from_utf8(&raw[..end])
                && let Some(data) = text.strip_prefix("data:")
                && !data.contains(['\n', '\r'])
            {
                events.push(data.strip_prefix(' ').unwrap_or(data).to_owned());
                continue;
            }
            let text = String::from_utf8_lossy(&raw[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        events
    }
}

/// Position and length of the first blank-line event separator (`\n\n` or `\r\n\r\n`): one pass
/// over the line feeds.
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = buf[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| from + i)
    {
        if buf.get(i + 1) == Some(&b'\n') {
            return Some((i, 2));
        }
        if i >= 1 && buf[i - 1] == b'\r' && buf.get(i + 1..i + 3) == Some(b"\r\n") {
            return Some((i - 1, 4));
        }
        from = i + 1;
    }
    None
}

/// Frames one payload as an SSE event.
pub fn event(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The `usage` object of a chunk, if the chunk carries a non-null one. Cheap for the common case:
/// payloads without the substring are not parsed.
pub fn usage_of(payload: &str) -> Option<Usage> {
    usage_and_choices(payload).map(|(usage, _)| usage)
}

/// True for the dedicated usage chunk (`choices: []` with a usage object).
pub fn is_usage_only(payload: &str) -> bool {
    usage_and_choices(payload).is_some_and(|(_, choices)| choices == Some(0))
}

/// A chunk's non-null `usage` and how many `choices` it has (if `choices` is an array), read in
/// one typed pass (nothing else of the chunk is kept).
fn usage_and_choices(payload: &str) -> Option<(Usage, Option<usize>)> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        choices: Option<ChoiceCount>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ChoiceCount {
        List(Vec<IgnoredAny>),
        Other(IgnoredAny),
    }
    if !payload.contains("\"usage\"") {
        return None;
    }
    let chunk: Chunk = serde_json::from_str(payload).ok()?;
    let choices = match chunk.choices {
        Some(ChoiceCount::List(l)) => Some(l.len()),
        _ => None,
    };
    Some((chunk.usage?, choices))
}

/// True for an `{"error":…}` event: an upstream's failure, or a worker's report that its upstream
/// broke (read only where the hop is decoded, `worker::transports`).
pub fn is_error(payload: &str) -> bool {
    payload.starts_with("{\"error\"")
}

/// The chunk with its top-level `model` set to `model`; `same` is `"model":"<model>"` as JSON, so
/// a chunk that already names it (the common case) is returned without being parsed.
pub fn with_model(payload: String, model: &str, same: &str) -> String {
    if payload == DONE || !payload.contains("\"model\"") || payload.contains(same) {
        return payload;
    }
    let Ok(mut v) = serde_json::from_str::<Value>(&payload) else {
        return payload;
    };
    match v.get_mut("model") {
        Some(m) if m.is_string() => {
            *m = Value::from(model);
            v.to_string()
        }
        _ => payload,
    }
}

/// Concatenated `delta.content` of a chunk (for counting what was delivered): a typed, borrowing
/// parse of the usual shape, and the general one for anything else.
pub fn delta_text(payload: &str) -> String {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(default, borrow)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        delta: Option<Delta<'a>>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        #[serde(default, borrow)]
        content: Option<Cow<'a, str>>,
    }
    if let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(payload) {
        return chunk
            .choices
            .iter()
            .filter_map(|c| c.delta.as_ref()?.content.as_deref())
            .collect();
    }
    let Ok(v) = serde_json::from_str::<Value>(payload) else {
        return String::new();
    };
    v.get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.pointer("/delta/content").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_name_the_requested_model() {
        let same = "\"model\":\"taogate-owner\"";
        let mapped =
            r#"{"id":"c","model":"echo-1","choices":[{"delta":{"content":"\"model\":\"x\""}}]}"#;
        let v: Value =
            serde_json::from_str(&with_model(mapped.into(), "taogate-owner", same)).unwrap();
        assert_eq!(v["model"], "taogate-owner");
        assert_eq!(v["choices"][0]["delta"]["content"], "\"model\":\"x\"");
        let kept = r#"{"model":"taogate-owner","choices":[]}"#;
        assert_eq!(with_model(kept.into(), "taogate-owner", same), kept);
        assert_eq!(with_model(DONE.into(), "m", same), DONE);
        assert!(is_error(r#"{"error":{"message":"x"}}"#) && !is_error(kept));
    }

    #[test]
    fn frames_events_across_arbitrary_chunk_boundaries() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3},\"choices\":[]}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut p = EventParser::default();
            let mut got = p.feed(&stream[..split]);
            got.extend(p.feed(&stream[split..]));
            assert_eq!(got.len(), 3, "split at {split}: {got:?}");
            assert_eq!(got[0], "{\"a\":1}");
            assert_eq!(
                usage_of(&got[1]),
                Some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3
                })
            );
            assert!(is_usage_only(&got[1]));
            assert_eq!(got[2], DONE);
        }
    }

    #[test]
    fn typed_reads_agree_with_the_general_ones() {
        let odd = [
            r#"{"choices":[{"delta":{"content":"a\"b"}},{"delta":{"content":"c"}}]}"#,
            r#"{"choices":[{"delta":{}},{"delta":{"content":null}},{"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text"}]}},{"delta":{"content":"y"}}]}"#,
            r#"{"choices":[1,{"delta":{"content":"z"}}]}"#,
            r#"{"choices":null}"#,
            r#"[1,2]"#,
            "not json",
        ];
        let general = |p: &str| -> String {
            serde_json::from_str::<Value>(p)
                .ok()
                .and_then(|v| {
                    v.get("choices").and_then(Value::as_array).map(|cs| {
                        cs.iter()
                            .filter_map(|c| c.pointer("/delta/content").and_then(Value::as_str))
                            .collect()
                    })
                })
                .unwrap_or_default()
        };
        for p in odd {
            assert_eq!(delta_text(p), general(p), "{p}");
        }
        let u = r#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#;
        assert!(is_usage_only(&format!("{u},\"choices\":[]}}")));
        assert!(!is_usage_only(&format!("{u},\"choices\":[{{}}]}}")));
        assert!(!is_usage_only(&format!("{u},\"choices\":null}}")));
        assert!(!is_usage_only(&format!("{u}}}")));
        assert!(usage_of(&format!("{u},\"choices\":{{}}}}")).is_some());
        assert_eq!(usage_of(r#"{"usage":{"prompt_tokens":1}}"#), None);
        let mut p = EventParser::default();
        assert_eq!(
            p.feed(b"data: a\ndata: b\n\ndata:c\r\n\r\nevent: x\ndata: d\n\n"),
            vec!["a\nb", "c", "d"]
        );
    }

    #[test]
    fn null_usage_is_no_usage() {
        assert_eq!(
            usage_of(r#"{"usage":null,"choices":[{"delta":{"content":"hi"}}]}"#),
            None
        );
        assert_eq!(
            delta_text(r#"{"usage":null,"choices":[{"delta":{"content":"hi"}}]}"#),
            "hi"
        );
    }
}
