"""Signs webhook bodies the way Stripe does, and verifies signatures, with the official `stripe`
library.

stdin: {"secret": "whsec_…", "timestamp": 1700000000, "bodies": ["…", …]}
stdout: a JSON list of `Stripe-Signature` header values, one per body.

stdin: {"secret": "whsec_…", "verify": [["<body>", "<header>"], …]}
stdout: a JSON list of booleans: whether each header verifies for its body (300 s tolerance).
"""
import json
import sys

import stripe

job = json.load(sys.stdin)
if "verify" in job:
    results = []
    for body, header in job["verify"]:
        try:
            stripe.WebhookSignature.verify_header(body, header, job["secret"], 300)
            results.append(True)
        except stripe.SignatureVerificationError:
            results.append(False)
    print(json.dumps(results))
else:
    headers = [
        stripe.WebhookSignature.generate_signature_header(body, job["secret"], timestamp=job["timestamp"])
        for body in job["bodies"]
    ]
    print(json.dumps(headers))
