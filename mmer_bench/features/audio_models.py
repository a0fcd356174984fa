"""Neural audio embeddings: VGGish (128-d per 0.96 s window) and wav2vec 2.0 hidden states.

Both run in the main process with torch.no_grad, batching across clips (``extract_many``): a
pool of processes each holding a copy of a torch model would only multiply memory and fight
over the same cores as torch's own threads. Neither downloads anything: weights come from a
local path, or the network is randomly initialised (with a warning) so pipelines and tests run
offline. torch, torchvggish and transformers are imported lazily (slow imports, and only these
extractors need them).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mmer_bench.features.audio import load_audio
from mmer_bench.features.base import Extractor
from mmer_bench.registry import EXTRACTORS

log = logging.getLogger(__name__)


def path_fingerprint(path: str | None) -> list | None:
    """Names and sizes of a checkpoint file or folder: a replaced checkpoint changes the cache key
    (sizes, as for the manifest's media files, rather than hashing gigabytes)."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return [[p.name, p.stat().st_size]]
    if p.is_dir():
        return [[str(f.relative_to(p)), f.stat().st_size] for f in sorted(p.rglob("*")) if f.is_file()]
    return None  # missing: extraction reports it; a stored result may still be read back


@contextlib.contextmanager
def torch_threads(n: int):
    """Let torch use ``n`` threads (the caller's worker count) for the duration."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded_init(seed: int):
    """Build a module under a fixed seed without disturbing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class TorchAudioEncoder(Extractor):
    """Shared plumbing: build the model once, load clips a group at a time (errors recorded per
    clip with the file name; a group bounds the audio held in memory) and pass each group's
    audio to ``encode`` in the main process."""

    # Fields that change how, not what, is computed: kept out of the cache key.
    run_only = ("batch_size", "device")
    clips_per_group = 64

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.run_only}

    def build_model(self):
        raise NotImplementedError

    def model(self):
        """The model, built once per extractor instance (a VGGish build alone takes a second)."""
        if getattr(self, "_model", None) is None:
            self._model = self.build_model()
        return self._model

    def encode(self, model, clips: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def extract_many(self, manifest: pd.DataFrame, workers: int) -> dict[str, np.ndarray | str]:
        import torch

        items, missing = self.source_items(manifest)
        results: dict[str, np.ndarray | str] = dict(missing)
        if not items:
            return results
        progress = tqdm(total=len(items), desc=f"extract {self.name}", unit="clip", mininterval=1.0)
        with torch_threads(workers), torch.no_grad():
            model = self.model()
            for start in range(0, len(items), self.clips_per_group):
                results.update(self._encode_group(model, items[start : start + self.clips_per_group]))
                progress.update(min(self.clips_per_group, len(items) - start))
        progress.close()
        return results

    def _encode_group(self, model, items: list[tuple[str, str]]) -> dict[str, np.ndarray | str]:
        results, loaded = {}, []
        for clip_id, path in items:
            try:
                loaded.append((clip_id, path, load_audio(path, 16000)))
            except Exception as exc:
                results[clip_id] = f"{path}: {type(exc).__name__}: {exc}"
        if loaded:
            outputs = self.encode(model, [audio for _, _, audio in loaded])
            for (clip_id, path, _), out in zip(loaded, outputs):
                ok = np.all(np.isfinite(out))
                results[clip_id] = out if ok else f"{path}: the extracted features contain NaN or infinite values"
        return results

    def extract_clip(self, path: str) -> np.ndarray:
        """One file, for interactive use; over a manifest use ``extract``, which batches clips."""
        import torch

        with torch.no_grad():
            return self.encode(self.model(), [load_audio(path, 16000)])[0]


# VGGish's front end (torchvggish/vggish_params): 16 kHz, 25 ms / 10 ms frames, 64 mel bands
# between 125 and 7500 Hz, log(mel + 0.01), 96-frame (0.96 s) patches.
VGGISH_FRAMES_PER_SECOND = 100
VGGISH_PATCH_FRAMES = 96


@EXTRACTORS.register("vggish")
@dataclass
class VGGish(TorchAudioEncoder):
    """VGGish embeddings, one 128-d vector per 0.96 s log-mel patch (windows x 128).

    Original: torchvggish 0.2 (harritaylor/torchvggish, the PyTorch port of AudioSet's VGGish,
    Hershey et al. 2017): its ``mel_features`` front end with ``vggish_params``, so the patches
    equal ``vggish_input.waveform_to_examples`` on 16 kHz audio bit for bit, and its ``VGG``
    network (tests/test_parity.py). The network is torchvggish's VGG; patches start every
    ``hop_seconds`` (0.96: no overlap, as in AudioSet). The output is the 128-d embedding layer
    (after its ReLU), without AudioSet's PCA/quantisation post-processing, which needs PCA
    parameters that are only downloadable. ``checkpoint``: a local state dict of torchvggish's
    VGG (e.g. vggish-10086976.pth); None builds the network from random initialisation (seeded
    by ``seed``, so features are reproducible) and logs a warning that it is untrained. A clip
    shorter than one patch is zero-padded to one.
    """

    checkpoint: str | None = None
    hop_seconds: float = 0.96
    seed: int = 0
    batch_size: int = 64  # patches per forward pass
    device: str = "cpu"
    kind = "sequence"

    def params(self) -> dict:
        return {**super().params(), "checkpoint_files": path_fingerprint(self.checkpoint)}

    def build_model(self):
        from torchvggish.torchvggish import VGG, make_layers

        # VGG(..., postprocess=False) is the only construction path that touches no URL:
        # torchvggish.vggish() downloads weights and its Postprocessor downloads PCA parameters.
        with seeded_init(self.seed):
            model = VGG(make_layers(), postprocess=False)
        if self.checkpoint:
            import torch

            if not Path(self.checkpoint).is_file():
                raise FileNotFoundError(f"VGGish checkpoint {self.checkpoint} does not exist")
            model.load_state_dict(torch.load(self.checkpoint, map_location="cpu", weights_only=True))
        else:
            log.warning("vggish: no checkpoint given, so the encoder is UNTRAINED (random weights, seed %d); "
                        "pass checkpoint=<local vggish state dict> for meaningful embeddings", self.seed)
        return model.eval().to(self.device)

    def patches(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel patches of one clip, (windows, 96, 64)."""
        from torchvggish import mel_features
        from torchvggish import vggish_params as p

        min_samples = int(p.SAMPLE_RATE * (p.STFT_WINDOW_LENGTH_SECONDS
                                           + (VGGISH_PATCH_FRAMES - 1) * p.STFT_HOP_LENGTH_SECONDS))
        if audio.size < min_samples:
            audio = np.pad(audio, (0, min_samples - audio.size))
        log_mel = mel_features.log_mel_spectrogram(
            audio, audio_sample_rate=p.SAMPLE_RATE, log_offset=p.LOG_OFFSET,
            window_length_secs=p.STFT_WINDOW_LENGTH_SECONDS, hop_length_secs=p.STFT_HOP_LENGTH_SECONDS,
            num_mel_bins=p.NUM_MEL_BINS, lower_edge_hertz=p.MEL_MIN_HZ, upper_edge_hertz=p.MEL_MAX_HZ)
        hop = max(1, int(round(self.hop_seconds * VGGISH_FRAMES_PER_SECOND)))
        return mel_features.frame(log_mel, window_length=VGGISH_PATCH_FRAMES, hop_length=hop)

    def encode(self, model, clips: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        patches = [self.patches(audio) for audio in clips]
        stacked = torch.from_numpy(np.concatenate(patches).astype(np.float32))[:, None]
        embeddings = [model(stacked[i : i + self.batch_size].to(self.device)).cpu()
                      for i in range(0, len(stacked), self.batch_size)]
        flat = torch.cat(embeddings).numpy().astype(np.float32)
        return np.split(flat, np.cumsum([len(p) for p in patches])[:-1])


def tiny_wav2vec2_config():
    """A 2-layer, 32-wide wav2vec2 with the real convolutional stack (20 ms frames) for tests."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", do_stable_layer_norm=True,
        # No SpecAugment-style time masking: its 10-frame spans would hide most of a test clip.
        mask_time_prob=0.0,
    )


@EXTRACTORS.register("wav2vec2")
@dataclass
class Wav2Vec2(TorchAudioEncoder):
    """wav2vec 2.0 hidden states of a transformers checkpoint in a local folder.

    Original: transformers' ``Wav2Vec2Model`` (Baevski et al. 2020) run on one clip normalised
    as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does; batched clips (padding plus an
    attention mask, layer-norm encoders only) give the same hidden states up to float32
    summation order (tests/test_parity.py: within 1e-4).

    ``model_path``: a folder with config.json and weights (from_pretrained, local files only);
    required unless ``tiny_random`` (a tiny randomly initialised model, for tests). ``layer``:
    -1 is the last hidden state, any other value indexes ``hidden_states`` (0 = the input of the
    first transformer layer). ``pooling``: "mean" over frames gives one vector per clip (kind
    "vector"), "none" the frames (frames x hidden, 50 frames per second; kind "sequence").
    Input is 16 kHz audio, zero-mean/unit-variance normalised per clip when ``normalize`` (None:
    as the folder's preprocessor_config.json says, else True). Clips of similar length are
    batched when the model accepts an attention mask (layer-norm feature encoders); group-norm
    models (wav2vec2-base) see one clip at a time, since padding would change their output.
    """

    model_path: str | None = None
    layer: int = -1
    pooling: str = "mean"
    tiny_random: bool = False
    normalize: bool | None = None
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    kind = "vector"  # "sequence" when pooling="none" (set per instance)

    def __post_init__(self):
        if self.pooling not in ("mean", "none"):
            raise ValueError(f"wav2vec2: pooling must be 'mean' or 'none', not {self.pooling!r}")
        if not self.model_path and not self.tiny_random:
            raise ValueError("wav2vec2 needs model_path (a local checkpoint folder); tiny_random=True is for tests")
        self.kind = "vector" if self.pooling == "mean" else "sequence"

    def params(self) -> dict:
        return {**super().params(), "model_files": path_fingerprint(self.model_path)}

    def build_model(self):
        from transformers import Wav2Vec2Model

        if self.tiny_random:
            with seeded_init(self.seed):
                model = Wav2Vec2Model(tiny_wav2vec2_config())
        else:
            if not Path(self.model_path, "config.json").is_file():
                raise FileNotFoundError(f"wav2vec2: {self.model_path} is not a checkpoint folder (no config.json)")
            model = Wav2Vec2Model.from_pretrained(self.model_path, local_files_only=True)
        n_states = model.config.num_hidden_layers + 1
        if not -n_states <= self.layer < n_states:
            raise ValueError(f"wav2vec2: layer {self.layer} is out of range; this model has {n_states} hidden states")
        return model.eval().to(self.device)

    def wants_normalized_input(self) -> bool:
        if self.normalize is not None:
            return self.normalize
        config = Path(self.model_path or "", "preprocessor_config.json")
        if self.model_path and config.is_file():
            return bool(json.loads(config.read_text()).get("do_normalize", True))
        return True

    def encode(self, model, clips: list[np.ndarray]) -> list[np.ndarray]:
        min_samples = min_input_samples(model.config)
        normalize = self.wants_normalized_input()
        prepared = []
        for audio in clips:
            if audio.size < min_samples:  # shorter than one frame's receptive field (25 ms)
                audio = np.pad(audio, (0, min_samples - audio.size))
            if normalize:
                audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
            prepared.append(audio.astype(np.float32))
        batchable = model.config.feat_extract_norm == "layer"
        size = self.batch_size if batchable else 1
        order = np.argsort([a.size for a in prepared], kind="stable")  # similar lengths share a batch
        outputs: list[np.ndarray] = [None] * len(prepared)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            for i, out in zip(index, self.forward(model, [prepared[i] for i in index], batchable)):
                outputs[i] = out
        return outputs

    def forward(self, model, batch: list[np.ndarray], with_mask: bool) -> list[np.ndarray]:
        import torch

        lengths = torch.tensor([a.size for a in batch])
        values = torch.zeros(len(batch), int(lengths.max()))
        for i, audio in enumerate(batch):
            values[i, : audio.size] = torch.from_numpy(audio)
        mask = (torch.arange(values.shape[1])[None, :] < lengths[:, None]).long() if with_mask else None
        out = model(values.to(self.device), attention_mask=None if mask is None else mask.to(self.device),
                    output_hidden_states=self.layer != -1)
        states = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        frames = model._get_feat_extract_output_lengths(lengths)
        result = []
        for i, n in enumerate(frames.tolist()):
            clip = states[i, :n].float().cpu().numpy()
            result.append(clip.mean(axis=0) if self.pooling == "mean" else clip)
        return result


def min_input_samples(config) -> int:
    """Fewest samples for which the convolutional feature encoder yields one frame."""
    n = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        n = (n - 1) * stride + kernel
    return n
