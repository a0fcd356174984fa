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

import torch
from torch import nn

from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.methods.layers import FANPooling, run_rnn
from mmer_bench.registry import METHODS


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
    defaults = {"backbone": "efficientnet-b0", "width": None, "depth": None, "hidden": 512, "dropout": 0.2,
                "crop_frames": 400, "lr": 1e-3, "max_epochs": 60, "patience": 10, "batch_size": 32}

    def build(self):
        from efficientnet_pytorch import EfficientNet

        overrides = {"image_size": None, "include_top": False}
        if self.hp["width"]:
            overrides["width_coefficient"] = self.hp["width"]
        if self.hp["depth"]:
            overrides["depth_coefficient"] = self.hp["depth"]
        # image_size None: "same" padding computed per input, so any clip length works.
        self.cnn = EfficientNet.from_name(self.hp["backbone"], in_channels=1, **overrides)
        for bn in self.batch_norms():
            bn.momentum = None  # a cumulative average, restarted every epoch (see the module docstring)
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
        for bn in self.batch_norms():
            bn.reset_running_stats()

    def out_lengths(self, length: torch.Tensor) -> torch.Tensor:
        """Time steps of the CNN output: ceil(length / 2) per stride-2 layer."""
        for _ in range(self.halvings):
            length = torch.div(length + 1, 2, rounding_mode="floor")
        return length

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, mels) -> (B, T', C): the CNN's last feature map averaged over frequency."""
        return self.cnn.extract_features(x.transpose(1, 2).unsqueeze(1)).mean(dim=2).transpose(1, 2)

    def forward(self, batch):
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
        return self.apply_heads(self.dropout(self.pool(states, out_mask)))
