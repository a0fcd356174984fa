"""Shared machinery for methods that fine-tune a pretrained encoder (``ssl-ft``,
``text-encoder-ft``; ``luna2022-w2v2-ft`` and ``text-transformer-ft`` are the fixed-recipe cases).

- ``load_encoder_for_training``: the encoder through features/encoders.py (hub id or folder,
  offline by default), with the fine-tuning options applied: ``freeze_feature_encoder`` (the
  convolutional waveform encoder of wav2vec2-style models, Whisper's two input convolutions, a
  text encoder's word embeddings), ``gradient_checkpointing`` (recompute activations in the
  backward pass: less memory for large models, ~30% more compute).
- ``layer_depths`` / ``layerwise_groups``: layer-wise learning-rate decay (LLRD; Howard & Ruder
  2018, ULMFiT's discriminative fine-tuning; Clark et al. 2020, ELECTRA): the head trains at
  ``lr``, the top encoder layer at ``lr * decay``, each layer below at one more factor of
  ``decay``, the embeddings / feature encoder at ``lr * decay ** (layers + 1)``.

bf16 on GPU: run with ``--precision bf16-mixed`` (a trainer setting of the runner; the encoder
then computes in bfloat16 under autocast, its weights and optimiser stay float32).
"""

from __future__ import annotations

import re

import torch

from mmer_bench.features.encoders import Encoder, load_encoder

# The encoder hyperparameters every fine-tuning method of this family takes.
FINETUNE_DEFAULTS = {"model": None, "revision": None, "allow_download": False, "freeze_feature_encoder": True,
                     "layer_decay": None, "gradient_checkpointing": False}

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers?|block)\.(\d+)\.")


def load_encoder_for_training(hp: dict, modality: str, default_model: str | None = None) -> Encoder:
    name = hp.get("model") or default_model
    if not name:
        raise ValueError("no encoder model given: set the hyperparameter model to a hub id (e.g. "
                         "microsoft/wavlm-large) or a local checkpoint folder (make bench ENCODER=...)")
    enc = load_encoder(name, hp.get("revision"), hp.get("allow_download"))
    if enc.modality != modality:
        raise ValueError(f"{name} is a {enc.modality} encoder ({enc.family}); this method fine-tunes {modality} encoders")
    if hp.get("freeze_feature_encoder"):
        freeze_feature_encoder(enc)
    if hp.get("gradient_checkpointing"):
        if not getattr(enc.module, "supports_gradient_checkpointing", False):
            raise ValueError(f"{name}: transformers' {type(enc.module).__name__} does not support gradient checkpointing")
        enc.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return enc


def freeze_feature_encoder(enc: Encoder) -> None:
    module = enc.module
    if hasattr(module, "freeze_feature_encoder"):  # wav2vec2, WavLM, data2vec-audio, ...
        module.freeze_feature_encoder()
    elif hasattr(module, "feature_extractor"):  # HubertModel has the convolutions but not the method
        module.feature_extractor._freeze_parameters()
    elif enc.input_name == "input_features":  # Whisper: the two convolutions over the log-mel
        for conv in (module.conv1, module.conv2):
            conv.requires_grad_(False)
    elif enc.modality == "text":
        module.get_input_embeddings().weight.requires_grad_(False)


def num_layers(config) -> int:
    return int(getattr(config, "num_hidden_layers", None) or config.encoder_layers)


def layer_depths(model: torch.nn.Module, encoder: torch.nn.Module, layers: int) -> dict[str, int]:
    """Parameter name -> depth: 0 for the encoder's input side (embeddings, feature encoder and
    projection, positional convolution, and any other parameter outside its layers), i + 1 for
    transformer layer i, ``layers + 1`` for everything outside the encoder (the head)."""
    encoder_ids = {id(p) for p in encoder.parameters()}
    prefix = next((name + "." for name, m in model.named_modules() if m is encoder), "")
    depths = {}
    for name, param in model.named_parameters():
        if id(param) not in encoder_ids:
            depths[name] = layers + 1
            continue
        match = _LAYER_INDEX.search(name[len(prefix):])
        depths[name] = int(match.group(1)) + 1 if match else 0
    return depths


def layerwise_groups(model: torch.nn.Module, encoder: torch.nn.Module, layers: int, lr: float,
                     decay: float) -> list[dict]:
    """Optimizer parameter groups, one per depth, with lr * decay ** (layers + 1 - depth)."""
    if not 0 < decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], not {decay}")
    depths = layer_depths(model, encoder, layers)
    groups: dict[int, list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(depths[name], []).append(param)
    return [{"params": params, "lr": lr * decay ** (layers + 1 - depth), "depth": depth}
            for depth, params in sorted(groups.items())]
