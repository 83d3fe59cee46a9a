"""Signs webhook bodies the way Stripe does, with the official `stripe` library.

stdin: {"secret": "whsec_…", "timestamp": 1700000000, "bodies": ["…", …]}
stdout: a JSON list of `Stripe-Signature` header values, one per body.
"""
import json
import sys

import stripe

job = json.load(sys.stdin)
headers = [
    stripe.WebhookSignature.generate_signature_header(body, job["secret"], timestamp=job["timestamp"])
    for body in job["bodies"]
]
print(json.dumps(headers))
