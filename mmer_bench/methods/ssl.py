"""Any pretrained speech (or text) encoder, frozen or fine-tuned.

- ``ssl-mlp``: the frozen-encoder protocol of SUPERB (Yang et al. 2021, "SUPERB: Speech
  processing Universal PERformance Benchmark", Interspeech) as EmoBox runs it for emotion (Ma et
  al. 2024, "EmoBox: Multilingual Multi-corpus Speech Emotion Recognition Toolkit and
  Benchmark", Interspeech). Input: the ``audio-encoder`` extractor's clip-mean hidden states of
  every layer, (states, H) per clip (``features: {audio-encoder: {model: ...}}``; the
  ``text-encoder`` extractor works the same way through ``inputs: {ssl-mlp: {states:
  text-encoder}}``). Each state is layer-normalised (no affine) and the states are summed with
  learned softmax weights (initialised equal), then Linear(H, ``hidden``), ReLU, dropout and one
  linear layer per task. A single-layer input (``layer: 6`` or ``"mean"``) skips the weighted
  sum; frame-level input (``pooling: none`` and ``frames: true``) is mean-pooled over the real
  frames first. Differences from EmoBox: their folds are their own speaker splits, their head
  pools frames with the weighted sum inside the trained model; here the weighted sum acts on
  clip means (mean pooling and a weighted sum commute, so only the layer norm, per clip rather
  than per frame, differs) and the folds are the corpus's protocol.
- ``ssl-ft``: the fine-tuning protocol, any speech encoder family (wav2vec2, HuBERT, WavLM,
  data2vec-audio, Whisper's encoder): the raw 16 kHz waveform (``waveform`` extractor) through
  the encoder (normalised per clip when the model's feature extractor says so; Whisper through
  its log-mel front end), mean over the real frames, dropout, Linear(H, H), tanh, dropout,
  Linear(H, classes) (transformers' sequence-classification head, as Luna-Jimenez et al. 2022
  used; ``luna2022-w2v2-ft`` is this method with their recipe). Options (methods/finetune.py):
  ``freeze_feature_encoder`` (default on), ``layer_decay`` (layer-wise learning-rate decay, e.g.
  0.8), ``gradient_checkpointing``, ``mask_time_prob`` (SpecAugment-style time masking of the
  wav2vec2 family; None: the checkpoint's own); ``--precision bf16-mixed`` on a GPU.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmer_bench.features.encoders import per_clip_conv
from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.methods.finetune import (
    FINETUNE_DEFAULTS,
    layerwise_groups,
    load_encoder_for_training,
    num_layers,
)
from mmer_bench.methods.layers import masked_mean
from mmer_bench.registry import METHODS

# The weighted sum's logits: enough for any released encoder (xlsr-2b has 49 hidden states).
MAX_STATES = 64

EMOBOX = {"ravdess": {
    "uar": None,  # depends on the encoder: see by_encoder
    "by_encoder": {"whisper-large-v3": 75.3, "wavlm-large": 72.0, "hubert-large-ll60k": 70.0, "hubert-large": 70.0,
                   "wav2vec2-base": 54.3},
    "source": "EmoBox (Ma et al. 2024, Interspeech), RAVDESS, frozen encoder + head, unweighted accuracy (UA)",
    "note": "EmoBox's own speaker splits; our folds are the corpus protocol's",
}}


@METHODS.register("ssl-mlp")
class SSLMLP(EmotionRecognizer):
    inputs = {"states": "audio-encoder"}
    scaling: ClassVar[dict[str, str]] = {}  # layer-normalised in forward
    paper = EMOBOX
    defaults = {"hidden": 256, "dropout": 0.2, "frames": False, "lr": 1e-3, "weight_decay": 1e-4,
                "max_epochs": 100, "patience": 15, "batch_size": 32}
    encoder_input = "states"  # whose extractor's model names the variant (leaderboard, paper column)

    def build(self):
        self.layer_logits = nn.Parameter(torch.zeros(MAX_STATES))
        self.body = nn.Sequential(nn.Linear(self.input_dims["states"], self.hp["hidden"]), nn.ReLU(),
                                  nn.Dropout(self.hp["dropout"]))
        self.heads = self.task_heads(self.hp["hidden"])

    def layer_weights(self, n: int) -> torch.Tensor:
        if n > MAX_STATES:
            raise ValueError(f"ssl-mlp: {n} hidden states; at most {MAX_STATES} are supported")
        return torch.softmax(self.layer_logits[:n], dim=0)

    def forward(self, batch):
        x = batch["inputs"]["states"]
        x = F.layer_norm(x, x.shape[-1:])
        if x.ndim == 3 and self.hp["frames"]:  # frames of one layer: pool the real ones
            x = masked_mean(x, batch["masks"]["states"])
        elif x.ndim == 3:  # (B, states, H): SUPERB's weighted sum
            if not bool(batch["masks"]["states"].all()):
                raise ValueError("ssl-mlp: the input rows differ in length, so they are frames (extractor pooling "
                                 "'none'), not hidden states: set hparams ssl-mlp: {frames: true}")
            x = torch.einsum("blh,l->bh", x, self.layer_weights(x.shape[1]).to(x.dtype))
        return self.apply_heads(self.body(x))


@METHODS.register("ssl-ft")
class SSLFineTune(EmotionRecognizer):
    inputs = {"wave": "waveform"}
    scaling: ClassVar[dict[str, str]] = {}  # normalised per clip in forward
    paper: ClassVar[dict[str, dict]] = {}
    defaults = {**FINETUNE_DEFAULTS, "mask_time_prob": None, "dropout": 0.1, "lr": 5e-5, "max_epochs": 20,
                "patience": 5, "batch_size": 8}
    encoder_hparam = "model"  # the hyperparameter naming the encoder (make bench ENCODER=...)
    # Group-norm convolutions (wav2vec2-base, HuBERT, WavLM) would normalise over the padding:
    # run them clip by clip (exact). luna2022-w2v2-ft keeps its published, batched behaviour.
    exact_group_norm = True

    def make_encoder(self):
        """(encoder module, preprocessor or None)."""
        enc = load_encoder_for_training(self.hp, "audio")
        return enc.module, enc.processor

    def build(self):
        self.encoder, self.processor = self.make_encoder()
        if self.hp["mask_time_prob"] is not None:
            self.encoder.config.mask_time_prob = float(self.hp["mask_time_prob"])
        if self.hp.get("freeze_feature_encoder", True) and hasattr(self.encoder, "freeze_feature_encoder"):
            self.encoder.freeze_feature_encoder()  # luna2022-w2v2-ft's fixed recipe (ssl-ft froze it on loading)
        config = self.encoder.config
        hidden = int(getattr(config, "hidden_size", None) or config.d_model)
        self.dropout = nn.Dropout(self.hp["dropout"])
        self.dense = nn.Linear(hidden, hidden)
        self.heads = self.task_heads(hidden)

    def encode(self, wave: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (B, T, H) and the mask of real frames (B, T)."""
        lengths = mask.sum(1)
        if self.encoder.main_input_name == "input_features":  # Whisper: log-mel of each clip's real samples
            clips = [w[: int(n)].float().cpu().numpy() for w, n in zip(wave, lengths)]
            feats = self.processor(clips, sampling_rate=16000, return_tensors="pt")["input_features"]
            states = self.encoder(feats.to(wave.device, wave.dtype)).last_hidden_state
            stride = self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0] * getattr(self.processor, "hop_length", 160)
            frames = torch.clamp(torch.ceil(lengths / stride), max=states.shape[1]).to(lengths.device)
        else:
            if getattr(self.processor, "do_normalize", True):  # zero mean, unit variance over the real samples
                mean = masked_mean(wave.unsqueeze(-1), mask)  # (B, 1)
                var = masked_mean(((wave - mean) ** 2).unsqueeze(-1), mask)
                wave = (wave - mean) / torch.sqrt(var + 1e-7) * mask.to(wave.dtype)
            group_norm = getattr(self.encoder.config, "feat_extract_norm", "layer") == "group"
            context = per_clip_conv(self.encoder, lengths.tolist()) if group_norm and self.exact_group_norm \
                else contextlib.nullcontext()
            with context:
                states = self.encoder(wave, attention_mask=mask.long()).last_hidden_state
            frames = self.encoder._get_feat_extract_output_lengths(lengths)
        frame_mask = torch.arange(states.shape[1], device=states.device)[None, :] < frames[:, None]
        return states, frame_mask

    def forward(self, batch):
        states, frame_mask = self.encode(batch["inputs"]["wave"].squeeze(-1), batch["masks"]["wave"])
        pooled = masked_mean(states, frame_mask)
        return self.apply_heads(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))

    def parameter_groups(self) -> list:
        decay = self.hp.get("layer_decay")
        if not decay or decay == 1:
            return super().parameter_groups()
        return layerwise_groups(self, self.encoder, num_layers(self.encoder.config), self.hp["lr"], float(decay))
