"""mmer-bench: a benchmark suite for multimodal emotion recognition on PyTorch Lightning."""

__version__ = "0.1.0"
