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

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from mmer_bench.fusion import Stacker
from mmer_bench.methods.base import EmotionRecognizer, ModelSettings
from mmer_bench.methods.baselines import PooledMLP
from mmer_bench.methods.layers import AttentionPooling, run_rnn
from mmer_bench.methods.ssl import SSLFineTune
from mmer_bench.registry import METHODS, STACKERS
from mmer_bench.settings import TrainRecipe


@METHODS.register("luna2022-au-mlp")
class Luna2022AUMLP(PooledMLP):
    inputs = {"au": "au-means"}
    scaling = {"au": "minmax"}
    paper = {"ravdess": {"accuracy": 60.22, "accuracy_std": 2.53,
                         "source": "Luna-Jimenez et al. 2022, Applied Sciences 12:327, Table 3"}}
    # The paper's recipe: 200 epochs on every training actor, no epoch selection.
    recipe = TrainRecipe(max_epochs=200, patience=None, batch_size=200, refit=True)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        hidden: int = 80  # hidden units (MLPClassifier's hidden_layer_sizes)
        lr: float = 1e-3
        weight_decay: float = 1e-4  # MLPClassifier's L2 alpha


@METHODS.register("luna2022-au-bilstm")
class Luna2022AUBiLSTM(EmotionRecognizer):
    inputs = {"au": "au-sequence"}
    scaling = {"au": "standard"}
    paper = {"ravdess": {"accuracy": 62.13,
                         "source": "Luna-Jimenez et al. 2022, Applied Sciences 12:327 (bi-LSTM on AU sequences)",
                         "note": "needs per-frame OpenFace AUs of the RAVDESS videos"}}
    recipe = TrainRecipe(gradient_clip_val=1.0, max_epochs=150, patience=20, batch_size=32)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        hidden: int = 50  # LSTM units per direction
        layers: int = 2
        dropout: float = 0.3  # between LSTM layers
        lr: float = 1e-3
        class_weighted: bool = True

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
class Luna2022Wav2Vec2FT(SSLFineTune):
    """``ssl-ft`` (methods/ssl.py) with the paper's recipe and a wav2vec2 checkpoint folder."""

    inputs = {"wave": "waveform"}
    scaling: ClassVar[dict[str, str]] = {}  # normalised per clip in forward
    paper = {"ravdess": {"accuracy": 81.82,
                         "source": "Luna-Jimenez et al. 2022, Applied Sciences 12:327 (xlsr-53 fine-tuned)"}}
    recipe = TrainRecipe(max_epochs=20, patience=5, batch_size=8)
    encoder_hparam = "model_path"
    exact_group_norm = False  # as published: padding reaches a group-norm model's first normalisation

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        model_path: str | None = None  # a local transformers wav2vec2 folder (e.g. xlsr-53)
        tiny_random: bool = False  # a tiny random encoder, for tests
        # The encoder's training-time masking of frames (None: the checkpoint's own, 0.05 for the
        # released ones; spans of 10 frames = 200 ms, so lower it for very short clips).
        mask_time_prob: float | None = None
        dropout: float = 0.1  # of the classification head
        lr: float = 1e-4

    def make_encoder(self):
        from transformers import Wav2Vec2Model

        from mmer_bench.features.audio_models import tiny_wav2vec2_config

        if self.hp["tiny_random"]:
            return Wav2Vec2Model(tiny_wav2vec2_config()), None
        if self.hp["model_path"]:
            return Wav2Vec2Model.from_pretrained(self.hp["model_path"], local_files_only=True), None
        raise ValueError("luna2022-w2v2-ft needs model_path (a local wav2vec2 checkpoint folder, e.g. "
                         "wav2vec2-large-xlsr-53); tiny_random: true is for tests")


@STACKERS.register("luna2022-fusion")
class Luna2022Fusion(Stacker):
    """Logistic regression (C=1) on MinMax-scaled concatenated posteriors (fusion.py).

    ``recipe`` says which posteriors of the training clips it learns from: "inner-cv" (default),
    out-of-fold posteriors from an inner ``inner_folds``-fold cross-validation of every fused
    method over the fold's training subjects (stacked generalisation, Wolpert 1992: a source that
    fits its own training clips cannot take all the weight, and nothing is chosen on test);
    "in-sample", the fused methods' posteriors of their own training clips, as the paper fuses
    (Luna-Jimenez et al. 2022; ``mmer fuse --recipe in-sample`` reproduces its 86.70%).

    Under a robustness condition (mmer_bench/robustness.py) it fuses the sources' test
    posteriors under that condition; a source that is "n/a" there (its modality removed) is left
    out and the logistic regression is refitted on the training posteriors of the sources still
    present, so with the audio removed it falls back to the facial sources alone."""

    paper = {"ravdess": {"accuracy": 86.70,
                         "source": "Luna-Jimenez et al. 2022, Table 5",
                         "note": "fuses fine-tuned wav2vec2 + AU MLP + AU BiLSTM; our row fuses the sources its "
                                 "fuse: setting names (every method of the run when unset)"}}
