"""The `vision` extra: timm backbones build from random init (no weight download) and run."""

import torch


def test_timm_backbone_on_a_spectrogram_image(timm_module):
    model = timm_module.create_model("efficientnet_b0", pretrained=False, in_chans=1, num_classes=8)
    logits = model(torch.randn(2, 1, 64, 96))
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()
