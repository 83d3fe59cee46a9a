//! The legacy bt.Axon synapse protocol (bittensor ≤ 10.5.0), dendrite side: `POST /<Synapse>` with
//! `bt_header_*` headers, `bt_header_input_obj_*` for required fields, and an sr25519 signature
//! (context `substrate`) over `"{nonce}.{dendrite}.{axon}.{uuid}.{body_hash}"`, where
//! `body_hash = sha3_256(concat(sha3_256(str(field)) for field in required_hash_fields))` over
//! Python's `str()` of each hashed field — [`py_repr`] reproduces Python's repr rules.
//!
//! Nonces: the axon keeps the last nonce per (dendrite hotkey, uuid) and refuses anything not
//! strictly greater, so concurrent requests that share a uuid can overtake each other and be
//! refused. Each request therefore gets its own uuid (the axon's first-seen path: nonce newer than
//! now − 4 s − timeout), and nonces still come from a strictly increasing source.

use std::collections::BTreeMap;
use std::fmt::Write;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha3::{Digest, Sha3_256};
use unicode_general_category::{GeneralCategory, get_general_category};

use super::hotkey::Hotkey;

/// `version_as_int` of bittensor 10.5.0 (major·10⁶ + minor·10³ + patch).
pub const DENDRITE_VERSION: u64 = 10_005_000;

/// How a chat request maps onto a subnet's synapse. Defaults: SN1's `StreamPromptingSynapse`
/// (v2.12.1): roles/messages lists, hash over `messages`, raw streamed text.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SynapseMapping {
    #[serde(default = "default_synapse")]
    pub synapse: String,
    /// `required_hash_fields`, in order.
    #[serde(default = "default_hash_fields")]
    pub hash_fields: Vec<String>,
    /// Required (no default) fields and the JSON type of their empty value (`str`, `list`,
    /// `int`, `dict`): sent as `bt_header_input_obj_<field>`.
    #[serde(default = "default_required")]
    pub required_fields: BTreeMap<String, String>,
    /// Constant fields added to every body (e.g. SN1's `task_name`).
    #[serde(default = "default_constants")]
    pub constants: BTreeMap<String, Value>,
    /// `StreamingSynapse` (raw streamed bytes) or a plain synapse answering JSON with `completion`.
    #[serde(default = "default_true")]
    pub streaming: bool,
    /// Seconds sent in the `timeout` header (widens the axon's nonce window).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
}

fn default_synapse() -> String {
    "StreamPromptingSynapse".into()
}
fn default_hash_fields() -> Vec<String> {
    vec!["messages".into()]
}
fn default_required() -> BTreeMap<String, String> {
    [
        ("task_name", "str"),
        ("roles", "list"),
        ("messages", "list"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}
fn default_constants() -> BTreeMap<String, Value> {
    [(
        "task_name".to_owned(),
        Value::String("InferenceTask".into()),
    )]
    .into_iter()
    .collect()
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> f64 {
    12.0
}

impl Default for SynapseMapping {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl SynapseMapping {
    /// The synapse body for a chat: `roles` and `messages` lists, the constants, and
    /// `required_hash_fields` (SN1 declared it as a field, so it is part of the JSON too).
    pub fn body(
        &self,
        roles: Vec<String>,
        messages: Vec<String>,
    ) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        body.insert("name".into(), Value::String(self.synapse.clone()));
        body.insert("timeout".into(), serde_json::json!(self.timeout_secs));
        for (k, v) in &self.constants {
            body.insert(k.clone(), v.clone());
        }
        body.insert("roles".into(), serde_json::json!(roles));
        body.insert("messages".into(), serde_json::json!(messages));
        body.insert(
            "required_hash_fields".into(),
            serde_json::json!(self.hash_fields),
        );
        body
    }

    /// `computed_body_hash` of `body`.
    pub fn body_hash(&self, body: &serde_json::Map<String, Value>) -> String {
        let values: Vec<&Value> = self
            .hash_fields
            .iter()
            .map(|f| body.get(f).unwrap_or(&Value::Null))
            .collect();
        body_hash(&values)
    }

    /// Every header of a signed request from `dendrite` to the axon `(ip, port, hotkey)`.
    pub fn headers(
        &self,
        dendrite: &Hotkey,
        axon: (&str, u16, &str),
        body_hash: &str,
        nonce: u64,
        uuid: &str,
    ) -> Vec<(String, String)> {
        let message = format!("{nonce}.{}.{}.{uuid}.{body_hash}", dendrite.ss58, axon.2);
        let mut h = vec![
            ("name".to_owned(), self.synapse.clone()),
            ("timeout".to_owned(), format!("{:?}", self.timeout_secs)),
            ("bt_header_axon_ip".to_owned(), axon.0.to_owned()),
            ("bt_header_axon_port".to_owned(), axon.1.to_string()),
            ("bt_header_axon_hotkey".to_owned(), axon.2.to_owned()),
            ("bt_header_dendrite_ip".to_owned(), "127.0.0.1".to_owned()),
            (
                "bt_header_dendrite_version".to_owned(),
                DENDRITE_VERSION.to_string(),
            ),
            ("bt_header_dendrite_nonce".to_owned(), nonce.to_string()),
            ("bt_header_dendrite_uuid".to_owned(), uuid.to_owned()),
            (
                "bt_header_dendrite_hotkey".to_owned(),
                dendrite.ss58.clone(),
            ),
            (
                "bt_header_dendrite_signature".to_owned(),
                dendrite.sign_hex(message.as_bytes()),
            ),
            ("computed_body_hash".to_owned(), body_hash.to_owned()),
        ];
        let b64 = base64::engine::general_purpose::STANDARD;
        for (field, ty) in &self.required_fields {
            let empty = match ty.as_str() {
                "list" => "[]",
                "int" => "0",
                "dict" => "{}",
                _ => "\"\"",
            };
            h.push((format!("bt_header_input_obj_{field}"), b64.encode(empty)));
        }
        h
    }
}

fn sha3_hex(s: &str) -> String {
    hex::encode(Sha3_256::digest(s.as_bytes()))
}

/// `Synapse.body_hash` over the values of the hashed fields, in order.
pub fn body_hash(values: &[&Value]) -> String {
    let inner: String = values.iter().map(|v| sha3_hex(&py_str_of(v))).collect();
    sha3_hex(&inner)
}

/// Python's `str(value)`: a `str` is itself; everything else is its repr (and strings inside
/// containers are repr'd).
pub fn py_str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `str()` of a JSON-shaped value (`None`, `True`, `0.1`, `'s'`, `[…]`, `{'k': v}`).
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    write_repr(v, &mut out);
    out
}

fn write_repr(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (_, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (_, _, Some(f)) => out.push_str(&py_float(f)),
            _ => out.push_str("nan"),
        },
        Value::String(s) => out.push_str(&py_str(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&py_str(k));
                out.push_str(": ");
                write_repr(item, out);
            }
            out.push('}');
        }
    }
}

/// Python's float repr: shortest round-trip digits, exponent form outside [1e-4, 1e16).
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f:?}")
}

/// Python's `str.isprintable()` for one character (Unicode general category).
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::SpaceSeparator
    )
}

/// Python's repr of a str: single quotes unless the text has `'` and no `"`; `\\`, `\n`, `\r`,
/// `\t` and the quote escaped; other non-printables as `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Vectors from the reference (§7), computed with Python and matched against bittensor
    /// 10.5.0's own `Synapse.body_hash`.
    #[test]
    fn body_hash_vectors() {
        let one = |v: Value| body_hash(&[&v]);
        assert_eq!(
            body_hash(&[]),
            "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
        assert_eq!(
            one(json!(["Hello"])),
            "7d572de8b8df200488c8c72bb6a1588ac7073e7c32d036d196ba7f7b2ada3e3f"
        );
        assert_eq!(
            one(json!(["it's"])),
            "031d2bb853fdbce3697e62bcb945464e07823eecc94c6e14de5e8f5957128ed9"
        );
        assert_eq!(
            one(json!(["say \"hi\""])),
            "2761ae5f2d46604979a1fd7cdeb234954776cbd9778a727f7c26f7a5995c3ee6"
        );
        assert_eq!(
            one(json!(["both ' and \""])),
            "ee67fd40589c8eadae7fd82ffef949c9131b02b271db903cec0fb9e0061592a0"
        );
        assert_eq!(
            one(json!(["tab\tnl\nbs\\"])),
            "7fa33e009521681f1908bbe07e0c8ed4d7551af3e75862994713dda58842fb2b"
        );
        assert_eq!(
            one(json!(["café 日本 🎉"])),
            "2ffba569b579acfcff5d77988a19a977d3ee3e3b8ca184cd6e247f829fce0071"
        );
        assert_eq!(
            one(json!(["zw\u{200b}sp\u{0}\u{7f}\u{a0}"])),
            "f608e5d746d5aa34750c0cbce724b5271aac8165e610be494412ac201232424f"
        );
        assert_eq!(
            one(json!([])),
            "a8ea28e4d52d34cdb5899a7d172856e378d786898fd92d0af8659a25bbee7098"
        );
        assert_eq!(
            body_hash(&[&json!(["user", "assistant"]), &json!(["a", "b"])]),
            "1724c02918dcf80b4d58fb37a52095217d1f926dee672f5e547e5ee667209267"
        );
        assert_eq!(
            body_hash(&[
                &json!(null),
                &json!(42),
                &json!(0.1),
                &json!(true),
                &json!({"k": 1})
            ]),
            "7b3c5503af51aadb86a9c061033641f8f2bda5a1e97265e95107e7a1afd71b57"
        );
        assert_eq!(
            body_hash(&[&json!(["user"]), &json!(["Hello, it's me"])]),
            "c021b7e42f9b51d7eff52567a54932194f9259df0f3ff3e5ab7467936ea8a98a"
        );
    }

    #[test]
    fn python_repr_rules() {
        assert_eq!(py_repr(&json!(["a", "b"])), "['a', 'b']");
        assert_eq!(py_repr(&json!(["it's"])), "[\"it's\"]");
        assert_eq!(py_repr(&json!(["both ' and \""])), "['both \\' and \"']");
        assert_eq!(
            py_repr(&json!({"k": [1, 2.5, null, false]})),
            "{'k': [1, 2.5, None, False]}"
        );
        assert_eq!(py_repr(&json!(1.0)), "1.0");
        assert_eq!(py_repr(&json!(1e21)), "1e+21");
        assert_eq!(py_repr(&json!(0.00001)), "1e-05");
        assert_eq!(
            py_repr(&json!("\u{1F600}\u{E000}\u{10FFFF}")),
            "'\u{1F600}\\ue000\\U0010ffff'"
        );
    }
}
