"""The AttnCNN speech model of a MERC2020 entry (the 2020 Korean Multimodal Emotion Recognition
Challenge, QIA Hackathon 2020; released as code, no paper and no RAVDESS number): an EfficientNet
(Tan & Le 2019) over the log-mel image, averaged over frequency into a sequence, a BiLSTM and
frame-attention pooling (FAN, Meng et al. 2019).

``merc2020-attncnn``: log-mel image (extractor ``logmel-merc``: 128 mels, 16 ms hop, each frame
scaled to [0, 1]) as a 1-channel image (B, 1, 128, T) -> EfficientNet features (B, C, 4, T/32)
-> mean over frequency -> BiLSTM (``hidden`` per direction, 512) -> FAN pooling over time ->
dropout 0.2 -> linear head per task.

What differs from the entry and why:

- Random initialisation (the entry fine-tuned ImageNet weights): no pretrained weights can be
  fetched here. ``backbone`` picks the EfficientNet (b0 by default, b4 as in the entry's largest
  model), ``width`` / ``depth`` override its width and depth coefficients (e.g. 0.25 / 0.25 for
  a CPU-sized network).
- Training crops clips longer than ``crop_frames`` (400, 6.4 s) to a random window, and pads
  shorter ones with the batch's longest; evaluation sees the whole clip. The convolutions cannot
  honour a mask, so padded training batches let a little padding reach the last real frames
  through the receptive field; at evaluation clips of equal length are run together, so no
  padding ever reaches the network and a clip's prediction does not depend on its batch.
- The BiLSTM is packed to the real (downsampled) length of each clip and FAN pooling reads only
  real frames.
- BatchNorm running statistics are the plain average over the batches of the latest training
  epoch (reset at each epoch start) instead of an exponential average (momentum 0.01 in
  efficientnet-pytorch). Trained from scratch on [0, 1] images, the activations' variances are
  1e-2 to 1e-5, and an exponential average that starts from unit variance needs hundreds of
  steps to forget it: until then every clip gets the same evaluation output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mmer_bench.methods.base import EmotionRecognizer, ModelSettings
from mmer_bench.methods.layers import FANPooling, masked_mean, run_rnn, sample_frames
from mmer_bench.registry import METHODS
from mmer_bench.settings import TrainRecipe


def efficientnet(hp: dict, in_channels: int) -> nn.Module:
    """A randomly initialised EfficientNet without its top (``backbone``, optional ``width`` /
    ``depth`` coefficients), any input size ("same" padding computed per input), its BatchNorms
    keeping a cumulative average (momentum None; see the module docstring)."""
    from efficientnet_pytorch import EfficientNet

    overrides = {"image_size": None, "include_top": False}
    if hp["width"]:
        overrides["width_coefficient"] = hp["width"]
    if hp["depth"]:
        overrides["depth_coefficient"] = hp["depth"]
    cnn = EfficientNet.from_name(hp["backbone"], in_channels=in_channels, **overrides)
    for module in cnn.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    return cnn


def reset_cumulative_batch_norms(module: nn.Module) -> None:
    """Restart the running statistics of every cumulative (momentum None) BatchNorm inside."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d) and bn.momentum is None:
            bn.reset_running_stats()


def random_crop(x: torch.Tensor, mask: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random window of ``frames`` real frames from each clip longer than that (others kept);
    the batch is then cut to its new longest clip."""
    length = mask.sum(1)
    if int(length.max()) <= frames:
        return x, mask
    start = (torch.rand(length.shape, device=x.device) * (length - frames + 1).clamp(min=1)).floor().long()
    new_length = length.clamp(max=frames)
    index = start[:, None] + torch.arange(frames, device=x.device)[None, :]
    index = index.clamp(max=x.shape[1] - 1)
    x = torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))
    new_mask = torch.arange(frames, device=x.device)[None, :] < new_length[:, None]
    return x * new_mask[:, :, None], new_mask


@METHODS.register("merc2020-attncnn")
class MERC2020AttnCNN(EmotionRecognizer):
    inputs = {"mel": "logmel-merc"}
    scaling: dict[str, str] = {}  # the extractor already scales every frame to [0, 1]
    recipe = TrainRecipe(max_epochs=60, patience=10, batch_size=32)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        backbone: str = "efficientnet-b0"  # efficientnet-pytorch model name (b4: the entry's largest)
        width: float | None = None  # EfficientNet width coefficient (None: the backbone's)
        depth: float | None = None  # EfficientNet depth coefficient (None: the backbone's)
        hidden: int = 512  # BiLSTM units per direction
        dropout: float = 0.2  # before the heads
        crop_frames: int = 400  # training crop in mel frames (6.4 s)
        lr: float = 1e-3  # learning rate

    def build(self):
        self.cnn = efficientnet(self.hp, in_channels=1)
        channels = self.cnn._bn1.num_features
        # Each stride-2 convolution halves the time axis (rounding up, "same" padding).
        strides = [self.cnn._conv_stem] + [b._depthwise_conv for b in self.cnn._blocks]
        self.halvings = sum(1 for conv in strides if conv.stride[1] == 2)
        self.rnn = nn.LSTM(channels, self.hp["hidden"], batch_first=True, bidirectional=True)
        self.pool = FANPooling(2 * self.hp["hidden"])
        self.dropout = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(2 * self.hp["hidden"])

    def batch_norms(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.cnn.modules() if isinstance(m, nn.BatchNorm2d)]

    def on_train_epoch_start(self):
        reset_cumulative_batch_norms(self)

    def out_lengths(self, length: torch.Tensor) -> torch.Tensor:
        """Time steps of the CNN output: ceil(length / 2) per stride-2 layer."""
        for _ in range(self.halvings):
            length = torch.div(length + 1, 2, rounding_mode="floor")
        return length

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, mels) -> (B, T', C): the CNN's last feature map averaged over frequency."""
        return self.cnn.extract_features(x.transpose(1, 2).unsqueeze(1)).mean(dim=2).transpose(1, 2)

    def forward(self, batch):
        return self.apply_heads(self.embed(batch))

    def embed(self, batch) -> torch.Tensor:
        """The pooled clip vector after dropout, (B, 2 * hidden): what the heads read."""
        x, mask = batch["inputs"]["mel"], batch["masks"]["mel"]
        if self.training:
            x, mask = random_crop(x, mask, self.hp["crop_frames"])
            length = mask.sum(1)
            features = self.encode(x)
        else:
            # Clips of one length together, each cut to its real frames: no padding enters.
            length = mask.sum(1)
            groups = []
            for value in torch.unique(length).tolist():
                rows = torch.nonzero(length == value).squeeze(1)
                groups.append((rows, self.encode(x[rows, :value])))
            steps = int(self.out_lengths(length).max())
            features = groups[0][1].new_zeros(x.shape[0], steps, groups[0][1].shape[2])  # the CNN's dtype (AMP)
            for rows, encoded in groups:
                features[rows, : encoded.shape[1]] = encoded
        out_mask = torch.arange(features.shape[1], device=x.device)[None, :] < self.out_lengths(length)[:, None]
        states = run_rnn(self.rnn, features, out_mask)
        return self.dropout(self.pool(states, out_mask))


@METHODS.register("merc2020-text-transformer")
class MERC2020TextTransformer(EmotionRecognizer):
    """The entry's text model: a Transformer encoder over the clip's word vectors (d_model = the
    vector size, 200; ``heads`` 8), masked mean over the real words, dropout, a head per task.

    The entry's code fed (batch, words, dim) tensors to a sequence-first encoder, so attention
    ran across the clips of a batch; here the encoder is batch-first and padded words are masked
    out of attention (``src_key_padding_mask``) and of the mean. Word vectors are standardised
    per dimension on the training clips (the entry used them raw)."""

    inputs = {"words": "npz-word-embed"}
    scaling = {"words": "standard"}
    recipe = TrainRecipe(max_epochs=60, patience=10, batch_size=32)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        heads: int = 8  # attention heads (must divide the word vector size)
        layers: int = 2  # Transformer encoder layers
        ff: int = 512  # feed-forward width of each layer
        dropout: float = 0.1  # in the encoder and before the heads
        lr: float = 1e-4  # learning rate

    def build(self):
        dim = self.input_dims["words"]
        if dim % self.hp["heads"]:
            raise ValueError(f"merc2020-text-transformer: word vector size {dim} is not divisible by heads={self.hp['heads']}")
        layer = nn.TransformerEncoderLayer(dim, self.hp["heads"], self.hp["ff"], self.hp["dropout"], batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, self.hp["layers"], enable_nested_tensor=False)
        self.dropout = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(dim)

    def embed(self, batch) -> torch.Tensor:
        x, mask = batch["inputs"]["words"], batch["masks"]["words"]
        states = self.encoder(x, src_key_padding_mask=~mask)
        return self.dropout(masked_mean(states, mask))

    def forward(self, batch):
        return self.apply_heads(self.embed(batch))


@METHODS.register("merc2020-clstm")
class MERC2020CLSTM(EmotionRecognizer):
    """The entry's face model (CLSTM): an EfficientNet (random init, as ``merc2020-attncnn``:
    ``backbone``, ``width``, ``depth``) on each face crop (extractor ``face-crops``, rows of
    3 * ``face_size``^2 values in [0, 1]), globally average-pooled, at most ``frames`` (16) crops
    per clip evenly spread over the clip -> BiLSTM (``hidden`` 320 per direction, packed) -> FAN
    pooling -> dropout -> a head per task. Only real crops go through the CNN, so padding never
    reaches it (nor its BatchNorm statistics)."""

    inputs = {"face": "face-crops"}
    scaling: dict[str, str] = {}  # crops are already in [0, 1]
    recipe = TrainRecipe(max_epochs=60, patience=10, batch_size=16)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        backbone: str = "efficientnet-b0"  # efficientnet-pytorch model name
        width: float | None = None  # EfficientNet width coefficient (None: the backbone's)
        depth: float | None = None  # EfficientNet depth coefficient (None: the backbone's)
        face_size: int = 96  # crops are face_size x face_size (the extractor's size)
        frames: int | None = 16  # crops per clip, evenly spread over it (None: every crop)
        hidden: int = 320  # BiLSTM units per direction
        dropout: float = 0.2  # before the heads
        lr: float = 1e-3  # learning rate

    def build(self):
        size = self.hp["face_size"]
        if self.input_dims["face"] != 3 * size * size:
            raise ValueError(f"merc2020-clstm: face input has {self.input_dims['face']} values a frame, "
                             f"not 3 * {size} * {size}; set face_size to the face-crops extractor's size")
        self.cnn = efficientnet(self.hp, in_channels=3)
        channels = self.cnn._bn1.num_features
        self.rnn = nn.LSTM(channels, self.hp["hidden"], batch_first=True, bidirectional=True)
        self.pool = FANPooling(2 * self.hp["hidden"])
        self.dropout = nn.Dropout(self.hp["dropout"])
        self.heads = self.task_heads(2 * self.hp["hidden"])

    def on_train_epoch_start(self):
        reset_cumulative_batch_norms(self)

    def embed(self, batch) -> torch.Tensor:
        x, mask = sample_frames(batch["inputs"]["face"], batch["masks"]["face"], self.hp["frames"])
        size = self.hp["face_size"]
        # Crops are stored (size, size, 3) row-major; the CNN wants channels first.
        images = x[mask].reshape(-1, size, size, 3).permute(0, 3, 1, 2)
        vectors = self.cnn.extract_features(images).mean(dim=(2, 3))
        features = vectors.new_zeros(x.shape[0], x.shape[1], vectors.shape[1])
        features[mask] = vectors
        states = run_rnn(self.rnn, features, mask)
        return self.dropout(self.pool(states, mask))

    def forward(self, batch):
        return self.apply_heads(self.embed(batch))


BRANCHES = {"speech": MERC2020AttnCNN, "face": MERC2020CLSTM, "text": MERC2020TextTransformer}


def load_branch(branch: nn.Module, path: str, name: str) -> None:
    """Load a unimodal method's state dict (or a Lightning checkpoint holding one) into a branch;
    any missing, unexpected or misshapen tensor is an error naming the file and the branch."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"merc2020-multimodal: {name}_checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        branch.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"merc2020-multimodal: {name}_checkpoint {path} does not fit the {name} branch "
                         f"({type(branch).__name__} with these hyperparameters): {exc}") from exc


@METHODS.register("merc2020-multimodal")
class MERC2020Multimodal(EmotionRecognizer):
    """The entry's multimodal model: the speech AttnCNN, face CLSTM and text Transformer branches
    (hyperparameters ``speech`` / ``face`` / ``text``: dicts of each branch's own), their pooled
    vectors concatenated -> the integrated head (and any other non-auxiliary task); the face and
    speech heads read their own branch's vector only. Loss = CE(integrated) + ``aux_lambda`` *
    (CE(face) + CE(speech)) / 2, ``aux_lambda`` 2 as in the entry (the corpus's task weights are
    not used). ``speech_checkpoint`` / ``face_checkpoint`` / ``text_checkpoint``: state dicts of
    the unimodal methods (same tasks and branch hyperparameters) to start the branches from.

    The integrated head reads all three branch vectors and none of them has a path for an absent
    input: a condition that removes a modality is reported "n/a" for it."""

    inputs = {**MERC2020AttnCNN.inputs, **MERC2020CLSTM.inputs, **MERC2020TextTransformer.inputs}
    scaling = {**MERC2020TextTransformer.scaling}
    recipe = TrainRecipe(max_epochs=30, patience=10, batch_size=8)

    @dataclass(frozen=True)
    class Settings(ModelSettings):
        speech: dict = field(default_factory=dict)  # the speech branch's settings (merc2020-attncnn's)
        face: dict = field(default_factory=dict)  # the face branch's settings (merc2020-clstm's)
        text: dict = field(default_factory=dict)  # the text branch's settings (merc2020-text-transformer's)
        aux_lambda: float = 2.0  # weight of the face and speech auxiliary losses
        speech_checkpoint: str | None = None  # state dict to start the speech branch from
        face_checkpoint: str | None = None  # state dict to start the face branch from
        text_checkpoint: str | None = None  # state dict to start the text branch from
        lr: float = 1e-4  # learning rate
    AUX = {"face": "face", "speech": "speech"}  # auxiliary task -> the branch whose vector it reads

    def build(self):
        self.branches = nn.ModuleDict()
        for name, cls in BRANCHES.items():
            dims = {key: self.input_dims[key] for key in cls.inputs}
            self.branches[name] = cls(self.tasks, dims, **(self.hp[name] or {}))
            if self.hp[f"{name}_checkpoint"]:
                load_branch(self.branches[name], self.hp[f"{name}_checkpoint"], name)
        width = sum(branch.heads[self.tasks[0].name].in_features for branch in self.branches.values())
        self.heads = nn.ModuleDict({t.name: nn.Linear(width, t.num_outputs) for t in self.tasks if t.name not in self.AUX})

    def on_train_epoch_start(self):
        reset_cumulative_batch_norms(self)

    def forward(self, batch):
        vectors = {name: branch.embed(batch) for name, branch in self.branches.items()}
        out = self.apply_heads(torch.cat(list(vectors.values()), dim=1))
        for task in self.tasks:
            if task.name in self.AUX:
                branch = self.AUX[task.name]
                out[task.name] = self.branches[branch].heads[task.name](vectors[branch])
        return out

    def compute_loss(self, logits, targets):
        aux = [t for t in self.tasks if t.name in self.AUX]
        total = 0.0
        for task in self.tasks:
            weight = self.hp["aux_lambda"] / len(aux) if task in aux else 1.0
            weights = getattr(self, f"class_weights_{task.name}") if self.hp["class_weighted"] else None
            total = total + weight * task.loss(logits[task.name].float(), targets[task.name], weights,
                                               self.hp["label_smoothing"])
        return total
