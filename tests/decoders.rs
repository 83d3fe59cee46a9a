//! Fuzzing the decoders (proptest; no nightly toolchain for cargo-fuzz here): everything that reads
//! bytes from outside — SSE from upstreams and workers, the SCALE of a subtensor node, the signed
//! headers of Epistula, `btauth/1` and Verathos requests, Stripe-style webhook signatures, API keys,
//! JWTs, invalidation messages — is fed arbitrary and near-valid input. None may panic, and none may
//! accept what it cannot verify.

use proptest::prelude::*;
use taogate::auth::key_cache::Invalidation;
use taogate::openai::sse::{self, EventParser};

/// Bytes that look like SSE more often than random bytes would.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b": keep-alive\n\n".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(br#"{"choices":[{"delta":{"content":"h"}}],"usage":{"prompt_tokens":1}}"#.to_vec()),
        Just(vec![0xE2, 0x82]),
        Just(vec![0xAC]),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

fn header_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("1".to_owned())),
        Just(Some(
            "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".to_owned()
        )),
        Just(Some(format!("0x{}", "ab".repeat(64)))),
        Just(Some(i64::MAX.to_string())),
        Just(Some(i64::MIN.to_string())),
        Just(Some(u64::MAX.to_string())),
        ".{0,80}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The SSE parser never panics, and how the bytes are split into chunks never changes the
    /// events it finds.
    #[test]
    fn sse_parsing_ignores_chunk_boundaries(bytes in sse_bytes(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let whole = EventParser::default().feed(&bytes);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut parser = EventParser::default();
        let mut split = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            split.extend(parser.feed(&bytes[from..to]));
            from = to;
        }
        prop_assert_eq!(whole.clone(), split);
        for event in &whole {
            let _ = sse::usage_of(event);
            let _ = sse::is_usage_only(event);
            let _ = sse::delta_text(event);
            let _ = sse::with_model(event.clone(), "m", "\"model\":\"m\"");
        }
    }

    /// Arbitrary SCALE bytes as a subtensor node's `NeuronInfoLite` list: an error or neurons,
    /// never a panic or an allocation the bytes cannot back.
    #[test]
    fn scale_neurons_decode_without_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = taogate::worker::chain::decode_neurons_lite(&bytes);
    }

    /// Signed-request checks refuse whatever they cannot verify.
    #[test]
    fn signed_headers_are_refused_unless_verified(
        values in prop::collection::vec(header_value(), 6),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = |name: &str| -> Option<String> {
            let i = name.bytes().map(usize::from).sum::<usize>() % values.len();
            values[i].clone()
        };
        let validators = vec!["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".to_owned()];
        let own = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";
        prop_assert!(taogate::worker::epistula::verify(header, &body, own, &validators, 1_700_000_000_000).is_err());
        prop_assert!(taogate::worker::verathos::verify(header, "POST", "/v1/chat/completions", &body, &validators, 1_700_000_000).is_err());
        let verifier = taogate::worker::btauth::Verifier::default();
        prop_assert!(verifier.verify(header, "POST", "/v1/chat/completions", &body, own, 1_700_000_000_000_000_000).is_err());
    }

    /// API keys and invalidation messages: arbitrary text never panics; keys that are not ours
    /// have no lookup hash.
    #[test]
    fn keys_and_messages_parse_without_panics(text in ".{0,120}") {
        let hash = taogate::auth::api_key::lookup_hash(b"pepper-pepper-pepper-pepper-pepper", &text);
        if !text.starts_with(taogate::auth::api_key::PREFIX) {
            prop_assert!(hash.is_none());
        }
        let _ = Invalidation::decode(&text);
        let _ = taogate::domain::normalize_email(&text);
    }

    /// Stripe-style signature headers: arbitrary ones never panic and never verify.
    #[test]
    fn webhook_signatures_are_refused_unless_signed(header in "[tv01=,a-f0-9 ]{0,120}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        use taogate::billing::payments::signature;
        prop_assert!(signature::verify(&header, &body, &["whsec_test"], 1_765_000_000, 300).is_err());
    }

    /// Arbitrary and tampered tokens are never valid access tokens.
    #[test]
    fn tokens_are_refused_unless_signed(text in "[A-Za-z0-9_\\-\\.]{0,200}", flip in any::<prop::sample::Index>()) {
        let sessions = sessions();
        prop_assert!(sessions.verify(&text).is_err());
        let good = sessions
            .issue((taogate::domain::UserId::generate(), "stamp".into()), taogate::domain::Role::Developer, None, None)
            .unwrap();
        let mut bytes = good.into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert!(sessions.verify(&tampered).is_err());
    }
}

fn sessions() -> taogate::auth::jwt::Sessions {
    taogate::auth::jwt::Sessions::new(&taogate::config::AuthConfig {
        jwt_secret: "0123456789abcdef0123456789abcdef-test".to_owned().into(),
        api_key_pepper: "pepper-pepper-pepper-pepper-pepper".to_owned().into(),
        access_token_ttl_secs: 900,
        refresh_token_ttl_secs: 3600,
        login_per_ip_per_minute: 10,
        login_per_email_per_minute: 5,
    })
}

/// Findings of the fuzzing above, kept: timestamps at the ends of i64 overflowed the freshness
/// arithmetic of the Epistula and Verathos checks (a panic on a request's headers).
#[test]
fn extreme_timestamps_are_refused_not_panics() {
    let validator = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".to_owned();
    let own = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";
    for ts in [i64::MAX, i64::MIN] {
        let header = |name: &str| -> Option<String> {
            let name = name.to_ascii_lowercase();
            Some(if name.contains("timestamp") {
                ts.to_string()
            } else if name.contains("signed-for") {
                own.to_owned()
            } else {
                validator.clone()
            })
        };
        let epistula = taogate::worker::epistula::verify(
            header,
            b"{}",
            own,
            std::slice::from_ref(&validator),
            1_700_000_000_000,
        );
        assert!(epistula.is_err(), "{ts}");
        let verathos = taogate::worker::verathos::verify(
            header,
            "POST",
            "/v1/chat/completions",
            b"{}",
            std::slice::from_ref(&validator),
            1_700_000_000,
        );
        assert!(verathos.is_err(), "{ts}");
    }
}
