//! taogate's Stripe-style webhook signatures against the official `stripe` Python library (PyPI,
//! pinned in tests/py/requirements.txt): headers the library generates verify here, headers signed
//! here verify in the library, and a wrong secret or a changed body is refused by both.

use std::process::Command;

use taogate::billing::payments::signature::{self, SignatureError, TOLERANCE_SECS};

fn python() -> String {
    std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

/// Runs `script` with the stripe library; its stdout lines.
fn stripe_py(script: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs (scripts/test creates .venv)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

const BODIES: [&str; 3] = [
    r#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"amount_total":1000}}}"#,
    r#"{"id":"evt_2","object":"event","data":{"object":{"description":"café ☕ \"quoted\""}}}"#,
    "{}",
];

#[test]
fn signatures_agree_with_the_stripe_library() {
    let now = chrono::Utc::now().timestamp();
    let secret = "whsec_test_0123456789abcdef";
    for body in BODIES {
        // The library signs; taogate verifies.
        let header = stripe_py(
            "import sys, stripe; print(stripe.WebhookSignature.generate_signature_header(sys.argv[1], sys.argv[2], int(sys.argv[3])))",
            &[body, secret, &now.to_string()],
        )
        .remove(0);
        assert_eq!(
            signature::verify(&header, body.as_bytes(), &[secret], now, TOLERANCE_SECS),
            Ok(now),
            "{header}"
        );
        assert_eq!(
            signature::verify(
                &header,
                body.as_bytes(),
                &["whsec_other"],
                now,
                TOLERANCE_SECS
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signature::verify(
                &header,
                b"{\"id\":\"evt_forged\"}",
                &[secret],
                now,
                TOLERANCE_SECS
            ),
            Err(SignatureError::Mismatch)
        );
        // taogate signs; the library verifies (and refuses a wrong secret).
        let ours = signature::sign(body.as_bytes(), secret, now);
        let verdicts = stripe_py(
            "import sys, stripe\n\
             for secret in (sys.argv[3], 'whsec_other'):\n\
             \x20   try:\n\
             \x20       stripe.WebhookSignature.verify_header(sys.argv[1], sys.argv[2], secret, tolerance=300)\n\
             \x20       print('ok')\n\
             \x20   except stripe.SignatureVerificationError:\n\
             \x20       print('refused')",
            &[body, &ours, secret],
        );
        assert_eq!(verdicts, ["ok", "refused"], "{ours}");
    }
}
