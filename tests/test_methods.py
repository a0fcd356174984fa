"""Sequence methods (Luna 2022 AU BiLSTM, MERC2020 AttnCNN, Williams 2018 BiLSTM), their shared
layers, the training-recipe options of the base class, and the data they need: the synthetic
corpus's OpenFace per-frame CSVs and the MERC log-mel image."""

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.media import write_tone
from method_table import SYNTHETIC

from mmer_bench.corpora.synthetic import EMOTIONS, GENERATOR_VERSION, Synthetic
from mmer_bench.data import collate
from mmer_bench.features.audio import LogMelMERC
from mmer_bench.features.face import AU_COLUMNS, read_openface_frames
from mmer_bench.methods import augment, layers
from mmer_bench.methods.base import EmotionRecognizer
from mmer_bench.registry import METHODS
from mmer_bench.runner import BenchConfig, BestWeights, monitor, run_bench
from mmer_bench.tasks import ClassificationTask, IntensityTask

TASKS = (ClassificationTask("emotion", ("a", "b", "c", "d", "e", "f")),)
# Recipes of the methods trained through the runner on the synthetic corpus (tests/method_table.py).
SMALL = SYNTHETIC
INPUT_DIMS = {"luna2022-au-bilstm": 35, "williams2018-bilstm": 25, "merc2020-attncnn": 128}



def make_batch(name: str, dim: int, lengths: list[int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    items = [{"clip_id": f"c{i}", "inputs": {name: rng.random((n, dim), dtype=np.float32)}, "targets": {"emotion": i % 6}}
             for i, n in enumerate(lengths)]
    return collate(items)


# --- layers -----------------------------------------------------------------------------------
def test_pooling_layers_ignore_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 4)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    garbage = x.clone()
    garbage[1, 3:] = 1e3  # whatever sits in padded frames must not matter
    for pool in (layers.AttentionPooling(4, 5), layers.FANPooling(4)):
        assert torch.allclose(pool(x, mask), pool(garbage, mask))
        assert torch.allclose(pool(x, mask)[1], pool(x[1:, :3], mask[1:, :3])[0], atol=1e-6)
    assert torch.allclose(layers.masked_mean(garbage, mask)[1], x[1, :3].mean(0))
    rnn = torch.nn.LSTM(4, 3, batch_first=True, bidirectional=True)
    out = layers.run_rnn(rnn, garbage, mask)
    assert torch.allclose(out[1, :3], layers.run_rnn(rnn, x[1:, :3], mask[1:, :3])[0], atol=1e-6)
    assert torch.all(out[1, 3:] == 0)


# --- each method: shapes, masks, padding ------------------------------------------------------
@pytest.mark.parametrize("method", list(SMALL))
def test_padding_does_not_change_predictions(method):
    torch.manual_seed(0)
    cls = METHODS.get(method)
    name = next(iter(cls.inputs))
    hp = {k: v for k, v in SMALL[method].items() if k not in ("max_epochs", "patience")}
    model = cls(TASKS, {name: INPUT_DIMS[method]}, **hp).eval()
    lengths = [45, 70, 33]
    alone = make_batch(name, INPUT_DIMS[method], lengths)
    padded = make_batch(name, INPUT_DIMS[method], [*lengths, 160])  # a longer clip pads the others
    assert padded["masks"][name].shape == (4, 160) and not padded["masks"][name][0, 45:].any()
    with torch.no_grad():
        a = model(alone)["emotion"]
        b = model(padded)["emotion"]
    assert a.shape == (3, 6) and b.shape == (4, 6) and torch.isfinite(b).all()
    assert torch.allclose(a, b[:3], atol=1e-5), (a - b[:3]).abs().max()
    # Training mode runs on the same batch and yields gradients everywhere that is used.
    model.train()
    loss = model.compute_loss(model(padded), padded["targets"])
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("method", list(SMALL))
def test_methods_run_under_bf16_autocast(method):
    cls = METHODS.get(method)
    name = next(iter(cls.inputs))
    hp = {k: v for k, v in SMALL[method].items() if k not in ("max_epochs", "patience")}
    model = cls(TASKS, {name: INPUT_DIMS[method]}, **hp)
    batch = make_batch(name, INPUT_DIMS[method], [30, 50, 41])
    for training in (True, False):
        model.train(training)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(batch)["emotion"].shape == (3, 6)


def test_williams_pools_a_clip_into_fixed_steps():
    from mmer_bench.methods.williams2018 import pool_steps

    x = torch.arange(100, dtype=torch.float32).reshape(1, 100, 1).repeat(2, 1, 1)
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, 7:] = False  # a clip shorter than the step count keeps one frame per step
    steps, step_mask = pool_steps(x, mask, 20, None)
    assert steps.shape == (2, 20, 1)
    assert torch.allclose(steps[0, :, 0], torch.arange(20) * 5 + 2.0)  # means of blocks of 5
    assert step_mask[1].sum() == 7 and torch.equal(steps[1, :7, 0], torch.arange(7.0))
    blocks, block_mask = pool_steps(x, mask, 20, 10)
    assert block_mask[0].sum() == 10 and blocks[0, 0, 0] == 4.5  # 100 frames / 10 = 10 steps


# --- training on the synthetic corpus ---------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_methods_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods")
    results = run_bench(BenchConfig(corpus="synthetic", methods=list(SMALL), folds=["fold0"], out=str(out),
                                    loggers=["csv"], workers=2, hparams=SMALL))
    return out, results


@pytest.mark.parametrize("method", list(SMALL))
def test_methods_learn_on_synthetic(synthetic_methods_run, method):
    _, results = synthetic_methods_run
    accuracy = results.query("method == @method and split == 'test' and metric == 'accuracy'")["value"].item()
    assert accuracy > 1 / 6 + 0.2, f"{method}: {accuracy:.2f}"


def test_williams_selects_on_validation_loss(synthetic_methods_run):
    import json

    out, _ = synthetic_methods_run
    info = json.loads((out / "jobs/williams2018-bilstm/fold0-seed0/job.json").read_text())
    assert info["selection"] == "best val/loss"
    metrics = pd.read_csv(out / "jobs/williams2018-bilstm/fold0-seed0/csv/metrics.csv").dropna(subset=["val/loss"])
    assert info["best_val"] == pytest.approx(metrics["val/loss"].min(), rel=1e-5)


def test_monitor_hyperparameter():
    corpus = Synthetic()
    assert monitor(corpus, {"monitor": None}) == ("val/emotion/accuracy", "max")
    assert monitor(corpus, {"monitor": "loss"}) == ("val/loss", "min")
    with pytest.raises(ValueError, match="unknown monitor"):
        monitor(corpus, {"monitor": "f1"})
    best = BestWeights("val/loss", "min")
    assert best.best == float("inf")


# --- training-recipe options ------------------------------------------------------------------
def test_mixup_mixes_inputs_masks_and_targets():
    torch.manual_seed(0)
    batch = make_batch("seq", 3, [5, 2, 4])
    batch["inputs"]["vec"] = torch.randn(3, 2)
    batch["targets"]["intensity"] = batch["inputs"]["vec"].clone()  # a regression target
    mixed = augment.mixup(batch, (*TASKS, IntensityTask("intensity", dimensions=("x", "y"))), alpha=0.4)
    soft = mixed["targets"]["emotion"]
    # Regression targets mix linearly, with the same pairs and weight as the inputs.
    assert torch.allclose(mixed["targets"]["intensity"], mixed["inputs"]["vec"])
    assert soft.shape == (3, 6) and torch.allclose(soft.sum(1), torch.ones(3))
    assert mixed["inputs"]["vec"].shape == (3, 2)
    assert torch.all(mixed["masks"]["seq"] >= batch["masks"]["seq"])  # a union of real frames
    # Soft-target cross-entropy is the mixup loss: lam * CE(y1) + (1 - lam) * CE(y2).
    logits, y1, y2, lam = torch.randn(3, 6), torch.tensor([0, 1, 2]), torch.tensor([3, 1, 5]), 0.3
    target = lam * torch.nn.functional.one_hot(y1, 6) + (1 - lam) * torch.nn.functional.one_hot(y2, 6)
    expected = lam * TASKS[0].loss(logits, y1) + (1 - lam) * TASKS[0].loss(logits, y2)
    assert torch.allclose(TASKS[0].loss(logits, target.float()), expected)


def test_spec_augment_masks_only_real_frames():
    torch.manual_seed(0)
    batch = make_batch("mel", 16, [40, 12])
    batch["inputs"]["mel"] += 1.0  # no real value is zero before masking
    batch["inputs"]["mel"][1, 12:] = 7.0  # a marker in padding (collate pads with zeros)
    out = augment.spec_augment(batch, time_masks=2, time_width=10, freq_masks=2, freq_width=4)["inputs"]["mel"]
    zeroed = out == 0
    assert zeroed[:, :12].any()  # something was masked
    assert not zeroed[1, 12:].any()  # padding untouched
    assert torch.equal(out[1, 12:], batch["inputs"]["mel"][1, 12:])


@pytest.mark.filterwarnings("ignore:.*self.trainer.* reference is not registered")
def test_training_step_with_mixup_specaugment_and_label_smoothing():
    torch.manual_seed(0)
    cls = METHODS.get("luna2022-au-bilstm")
    model = cls(TASKS, {"au": 35}, hidden=8, mixup=0.4, specaugment={"time_width": 5, "freq_width": 4},
                label_smoothing=0.1)
    batch = make_batch("au", 35, [20, 30, 25, 40])
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and model.rnn.weight_ih_l0.grad is not None


@pytest.mark.filterwarnings("ignore:.*self.trainer.* reference is not registered")
def test_frame_level_training_step_with_mixup_and_specaugment():
    torch.manual_seed(0)
    model = METHODS.get("au-frame-mlp")(TASKS, {"au": 35}, mixup=0.4, specaugment=True)
    loss = model.training_step(make_batch("au", 35, [20, 30, 25]), 0)
    loss.backward()
    assert torch.isfinite(loss)


def test_ranger_optimizer(timm_module):
    model = METHODS.get("williams2018-bilstm")(TASKS, {"speech": 25}, optimizer="ranger", scheduler="cosine")
    config = model.configure_optimizers()
    optimizer = config["optimizer"]
    assert "Lookahead" in type(optimizer).__name__ and isinstance(optimizer, torch.optim.Optimizer)


def test_ranger_without_timm_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name.startswith("timm"):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    model = METHODS.get("williams2018-bilstm")(TASKS, {"speech": 25}, optimizer="ranger")
    with pytest.raises(ImportError, match=r"vision"):
        model.configure_optimizers()


def test_every_method_accepts_the_recipe_options():
    for name, cls in METHODS.items():
        if issubclass(cls, EmotionRecognizer):
            assert {"mixup", "specaugment", "monitor", "label_smoothing"} <= set(cls.hparam_defaults()), name


# --- data: synthetic OpenFace CSVs and the MERC log-mel image ---------------------------------
def test_synthetic_openface_frames():
    assert GENERATOR_VERSION == "2"
    manifest = Synthetic().manifest()
    assert manifest["openface_path"].notna().all()
    path = manifest["openface_path"].iloc[0]
    header = open(path).readline().rstrip("\n").split(",")
    assert header[:5] == ["frame", " face_id", " timestamp", " confidence", " success"]
    assert header[5:] == [f" {c}" for c in AU_COLUMNS]  # OpenFace pads names with a space
    raw = pd.read_csv(path, skipinitialspace=True)
    lengths = [len(pd.read_csv(p)) for p in manifest["openface_path"].iloc[::12]]
    assert min(lengths) >= 20 and max(lengths) <= 60 and len(set(lengths)) > 5
    frames = read_openface_frames(path)
    assert frames.shape == (int(raw["success"].sum()), 35)
    presence = frames[:, len(AU_COLUMNS) - 18:]
    assert set(np.unique(presence)) <= {0.0, 1.0}
    # The AU-means table is the mean over each clip's tracked frames.
    means = pd.read_csv(manifest["au_means_path"].iloc[0], dtype={"clip_id": str}).set_index("clip_id")
    assert np.allclose(means.loc[manifest["clip_id"].iloc[0]].to_numpy(), frames.mean(0), atol=1e-3)
    # Emotions differ in their time course: surprise peaks earlier in the clip than sadness.
    peaks = {}
    for row in manifest.iloc[::3].itertuples():
        track = read_openface_frames(row.openface_path)[:, :17].sum(1)
        peaks.setdefault(EMOTIONS[row.emotion], []).append(np.argmax(track) / len(track))
    assert np.mean(peaks["surprised"]) < np.mean(peaks["sad"])


def test_logmel_merc_trims_silence_and_scales_frames(tmp_path):
    import soundfile as sf

    write_tone(tmp_path / "tone.wav", seconds=1.0, freq=300)
    tone, rate = sf.read(tmp_path / "tone.wav", dtype="float32")
    padded = np.concatenate([np.zeros(8000, np.float32), tone, 1e-4 * np.ones(8000, np.float32)])
    sf.write(tmp_path / "padded.wav", padded, rate)
    extractor = LogMelMERC()
    plain = extractor.extract_clip(str(tmp_path / "tone.wav"))
    trimmed = extractor.extract_clip(str(tmp_path / "padded.wav"))
    assert plain.shape == (1 + 16000 // 256, 128) and plain.dtype == np.float32  # centred frames
    # The half seconds of silence are gone, up to the frames that overlap the tone's edges.
    assert 0 <= trimmed.shape[0] - plain.shape[0] <= 4
    # librosa.util.normalize per frame, then (1 + y) / 2: each frame's extreme dB cell lands on 0 or 1.
    assert trimmed.min() >= 0 and trimmed.max() <= 1
    assert np.all(np.isclose(trimmed.min(axis=1), 0, atol=1e-6) | np.isclose(trimmed.max(axis=1), 1))
    # 300 Hz sits in a low mel band, far below the top ones.
    assert plain[:, :30].mean() > plain[:, -20:].mean()
