"""Luna-Jimenez, Kleinlein, Griol, Callejas, Montero, Fernandez-Martinez (2022), "A proposal
for multimodal emotion recognition using aural transformers and facial action units on RAVDESS
dataset", Applied Sciences 12(1):327. Subject-wise 5-fold CV on RAVDESS speech clips.

- ``luna2022-au-mlp``: the static facial model (Table 3: clip-mean OpenFace AUs, MLP with 80
  hidden units, 60.22 +- 2.53% accuracy). The paper trains scikit-learn's MLPClassifier (Adam,
  L2 1e-4, up to 200 epochs, no early stopping) on all training actors; here it is the same
  network in torch with the same recipe (200 epochs over all training actors, batch 200). The
  validation actors are scored but select nothing.
- ``luna2022-au-bilstm``: the dynamic facial model (62.13% accuracy): per-frame OpenFace AUs
  through a 2-layer BiLSTM (50 units per direction, dropout 0.3 between layers), additive
  self-attention pooling over time (Linear 100-100, tanh, Linear 100-1, softmax) and a linear
  layer to the 8 emotions; class-weighted cross-entropy, Adam 1e-3, gradient norm clipped at 1,
  early stopping on the validation actors. Differences: sequences are packed, so padding never
  reaches the recurrence or the pooling (a fixed-length padded batch would let it leak); AUs are
  standardised on the training clips (the paper's scaling of the sequences is not stated). The
  public RAVDESS data carries no per-frame AUs (only clip means), so this model runs on corpora
  with OpenFace per-frame CSVs (the synthetic corpus here) until those are extracted.
- ``luna2022-w2v2-ft``: the aural model (81.82% accuracy with xlsr-53 fine-tuned): a wav2vec 2.0
  checkpoint (``model_path``, a local transformers folder; ``tiny_random`` builds a tiny random
  one for tests) over the raw 16 kHz waveform (extractor ``waveform``), its convolutional feature
  encoder frozen and its transformer fine-tuned, mean over the real frames, dropout, Linear(H, H),
  tanh, dropout, Linear(H, classes) (the classification head of transformers' wav2vec2 sequence
  classifiers). Each clip is normalised to zero mean and unit variance over its real samples,
  and padding is masked out of attention and of the mean (exact only for layer-norm feature
  encoders such as xlsr-53; group-norm ones such as wav2vec2-base see padding in their first
  normalisation).
- ``luna2022-fusion``: the late fusion (Table 5: 86.70% for wav2vec2 + AU MLP + AU BiLSTM):
  logistic regression (C=1) on MinMax-scaled concatenated posteriors, trained on the training
  folds' posteriors.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.methods.layers import AttentionPooling, masked_mean, run_rnn
from mmer_bench.registry import METHODS


@METHODS.register("luna2022-au-mlp")
class Luna2022AUMLP(EmotionRecognizer):
    inputs = {"au": "au-means"}
    scaling = {"au": "minmax"}
    paper = {"ravdess": {"accuracy": 60.22, "accuracy_std": 2.53,
                         "source": "Luna-Jimenez et al. 2022, Applied Sciences 12:327, Table 3"}}
    # The paper's recipe: 200 epochs on every training actor, no epoch selection.
    defaults = {"hidden": 80, "lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 200, "patience": None,
                "batch_size": 200, "refit": True}

    def build(self):
        self.body = nn.Sequential(nn.Linear(self.input_dims["au"], self.hp["hidden"]), nn.ReLU())
        self.heads = self.task_heads(self.hp["hidden"])

    def forward(self, batch):
        return self.apply_heads(self.body(batch["inputs"]["au"]))


@METHODS.register("luna2022-au-bilstm")
class Luna2022AUBiLSTM(EmotionRecognizer):
    inputs = {"au": "au-sequence"}
    scaling = {"au": "standard"}
    paper = {"ravdess": {"accuracy": 62.13,
                         "source": "Luna-Jimenez et al. 2022, Applied Sciences 12:327 (bi-LSTM on AU sequences)",
                         "note": "needs per-frame OpenFace AUs of the RAVDESS videos"}}
    defaults = {"hidden": 50, "layers": 2, "dropout": 0.3, "lr": 1e-3, "class_weighted": True,
                "gradient_clip_val": 1.0, "max_epochs": 150, "patience": 20, "batch_size": 32}

    def build(self):
        hidden = self.hp["hidden"]
        self.rnn = nn.LSTM(self.input_dims["au"], hidden, num_layers=self.hp["layers"], batch_first=True,
                           bidirectional=True, dropout=self.hp["dropout"] if self.hp["layers"] > 1 else 0.0)
        self.pool = AttentionPooling(2 * hidden, 2 * hidden)
        self.heads = self.task_heads(2 * hidden)

    def forward(self, batch):
        mask = batch["masks"]["au"]
        states = run_rnn(self.rnn, batch["inputs"]["au"], mask)
        return self.apply_heads(self.pool(states, mask))


@METHODS.register("luna2022-w2v2-ft")
class Luna2022Wav2Vec2FT(EmotionRecognizer):
    inputs = {"wave": "waveform"}
    scaling: ClassVar[dict[str, str]] = {}  # normalised per clip in forward
    paper = {"ravdess": {"accuracy": 81.82,
                         "source": "Luna-Jimenez et al. 2022, Applied Sciences 12:327 (xlsr-53 fine-tuned)"}}
    # mask_time_prob: the encoder's training-time masking of frames (None: the checkpoint's own,
    # 0.05 for the released ones; spans of 10 frames = 200 ms, so lower it for very short clips).
    defaults = {"model_path": None, "tiny_random": False, "mask_time_prob": None, "dropout": 0.1, "lr": 1e-4, "max_epochs": 20,
                "patience": 5, "batch_size": 8}

    def build(self):
        from transformers import Wav2Vec2Model

        from mmer_bench.features.audio_models import tiny_wav2vec2_config

        if self.hp["tiny_random"]:
            self.encoder = Wav2Vec2Model(tiny_wav2vec2_config())
        elif self.hp["model_path"]:
            self.encoder = Wav2Vec2Model.from_pretrained(self.hp["model_path"], local_files_only=True)
        else:
            raise ValueError("luna2022-w2v2-ft needs model_path (a local wav2vec2 checkpoint folder, e.g. "
                             "wav2vec2-large-xlsr-53); tiny_random: true is for tests")
        if self.hp["mask_time_prob"] is not None:
            self.encoder.config.mask_time_prob = float(self.hp["mask_time_prob"])
        self.encoder.freeze_feature_encoder()
        hidden = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(self.hp["dropout"])
        self.dense = nn.Linear(hidden, hidden)
        self.heads = self.task_heads(hidden)

    def forward(self, batch):
        wave, mask = batch["inputs"]["wave"].squeeze(-1), batch["masks"]["wave"]
        weights = mask.to(wave.dtype)
        count = weights.sum(1, keepdim=True).clamp(min=1)
        mean = (wave * weights).sum(1, keepdim=True) / count
        var = (((wave - mean) * weights) ** 2).sum(1, keepdim=True) / count
        wave = (wave - mean) / torch.sqrt(var + 1e-7) * weights
        states = self.encoder(wave, attention_mask=mask.long()).last_hidden_state
        frames = self.encoder._get_feat_extract_output_lengths(mask.sum(1))
        frame_mask = torch.arange(states.shape[1], device=states.device)[None, :] < frames[:, None]
        pooled = masked_mean(states, frame_mask)
        return self.apply_heads(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))


@METHODS.register("luna2022-fusion")
class Luna2022Fusion:
    """Late fusion of the posteriors of other methods of the same run (not a network: the
    runner trains it on the training clips' posteriors after the fused methods' jobs).

    Under a robustness condition (mmer_bench/robustness.py) it fuses the sources' test
    posteriors under that condition; a source that is "n/a" there (its modality removed) is left
    out and the logistic regression is refitted on the training posteriors of the sources still
    present, so with the audio removed it falls back to the facial sources alone."""

    is_fusion = True
    inputs: ClassVar[dict[str, str]] = {}
    paper = {"ravdess": {"accuracy": 86.70,
                         "source": "Luna-Jimenez et al. 2022, Table 5",
                         "note": "fuses fine-tuned wav2vec2 + AU MLP + AU BiLSTM; our row fuses the methods of this run"}}
    defaults: ClassVar[dict] = {"C": 1.0, "fuse": None}  # fuse: method names; None = every other method run

    @classmethod
    def hparam_defaults(cls) -> dict:
        return dict(cls.defaults)
