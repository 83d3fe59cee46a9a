"""bittensor 10.5.0's own `Synapse.body_hash` for arbitrary values: reads JSON lines (one value
each), prints the body hash of a synapse whose single hashed field holds that value."""
import json
import sys
from typing import Any, ClassVar, Tuple

import bittensor as bt


class Probe(bt.Synapse):
    required_hash_fields: ClassVar[Tuple[str, ...]] = ("payload",)
    payload: Any = None


for line in sys.stdin:
    print(Probe(payload=json.loads(line)).body_hash, flush=True)
