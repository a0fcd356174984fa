"""MERC2020 text Transformer, face CLSTM and multimodal model, and Luna 2022's fine-tuned
wav2vec 2.0: shapes, padding invariance, the multimodal loss and checkpoints, and short runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.merc2020 import make_merc2020

from mmer_bench.corpora.merc2020 import Merc2020
from mmer_bench.data import collate
from mmer_bench.registry import CORPORA, METHODS
from mmer_bench.runner import BenchConfig, run_bench

MERC_TASKS = Merc2020.tasks
SMALL_CNN = {"width": 0.25, "depth": 0.25}
FACE = 16  # face_size of the random crops
DIMS = {"mel": 128, "face": 3 * FACE * FACE, "words": 40, "wave": 1}
BRANCH_HP = {"speech": {**SMALL_CNN, "hidden": 8}, "face": {**SMALL_CNN, "face_size": FACE, "hidden": 8},
             "text": {"layers": 1, "ff": 32}}



def make_batch(lengths: dict[str, list[int]], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(next(iter(lengths.values())))
    items = [{"clip_id": f"c{i}",
              "inputs": {name: rng.random((ls[i], DIMS[name]), dtype=np.float32) for name, ls in lengths.items()},
              "targets": {t.name: (i + k) % 7 for k, t in enumerate(MERC_TASKS)}} for i in range(n)]
    return collate(items)


def check_padding(model, lengths: dict[str, list[int]], longer: dict[str, int]):
    """Predictions of three clips alone and in a batch with a longer fourth clip agree."""
    model.eval()
    alone = make_batch(lengths)
    padded = make_batch({name: [*ls, longer[name]] for name, ls in lengths.items()})
    with torch.no_grad():
        a, b = model(alone), model(padded)
    for task in MERC_TASKS:
        assert a[task.name].shape == (3, 7) and b[task.name].shape == (4, 7)
        assert torch.isfinite(b[task.name]).all()
        assert torch.allclose(a[task.name], b[task.name][:3], atol=1e-4), (a[task.name] - b[task.name][:3]).abs().max()
    model.train()
    loss = model.compute_loss(model(padded), padded["targets"])
    loss.backward()
    assert torch.isfinite(loss)


def test_text_transformer_shapes_and_padding():
    torch.manual_seed(0)
    model = METHODS.get("merc2020-text-transformer")(MERC_TASKS, {"words": 40}, **BRANCH_HP["text"])
    assert model.encoder.layers[0].self_attn.batch_first and model.encoder.layers[0].self_attn.num_heads == 8
    check_padding(model, {"words": [5, 9, 3]}, {"words": 14})
    with pytest.raises(ValueError, match="not divisible by heads=8"):
        METHODS.get("merc2020-text-transformer")(MERC_TASKS, {"words": 30})


def test_clstm_shapes_padding_and_frame_sampling():
    from mmer_bench.methods.layers import sample_frames

    torch.manual_seed(0)
    model = METHODS.get("merc2020-clstm")(MERC_TASKS, {"face": DIMS["face"]}, **BRANCH_HP["face"], frames=4)
    check_padding(model, {"face": [3, 4, 2]}, {"face": 9})
    x = torch.arange(10.0).reshape(1, 10, 1).repeat(2, 1, 1)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 3:] = False
    picked, picked_mask = sample_frames(x, mask, 4)
    assert picked[0, :, 0].tolist() == [1.0, 3.0, 6.0, 8.0]  # evenly spread over 10 frames
    assert picked_mask[1].tolist() == [True, True, True, False] and picked[1, :3, 0].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="set face_size"):
        METHODS.get("merc2020-clstm")(MERC_TASKS, {"face": 3 * 96 * 96}, face_size=32)


MM_LENGTHS = {"mel": [40, 64, 33], "face": [3, 4, 2], "words": [5, 9, 3]}
MM_LONGER = {"mel": 90, "face": 6, "words": 12}


def multimodal(**hp):
    dims = {k: DIMS[k] for k in ("mel", "face", "words")}
    return METHODS.get("merc2020-multimodal")(MERC_TASKS, dims, **BRANCH_HP, **hp)


def test_multimodal_shapes_padding_and_aux_loss():
    torch.manual_seed(0)
    model = multimodal()
    assert set(model.heads) == {"integrated"} and model.heads["integrated"].in_features == 16 + 16 + 40
    check_padding(model, MM_LENGTHS, MM_LONGER)
    model.eval()
    batch = make_batch(MM_LENGTHS)
    with torch.no_grad():
        logits = model(batch)
        # The face head reads the face branch only: changing the speech input leaves it unchanged.
        other = make_batch(MM_LENGTHS, seed=1)
        other["inputs"]["face"] = batch["inputs"]["face"]
        assert torch.allclose(model(other)["face"], logits["face"])
        ce = {t: torch.nn.functional.cross_entropy(logits[t], batch["targets"][t]) for t in ("integrated", "face", "speech")}
        expected = ce["integrated"] + 2.0 * (ce["face"] + ce["speech"]) / 2
        assert torch.allclose(model.compute_loss(logits, batch["targets"]), expected)
        model.hp["aux_lambda"] = 0.5
        assert torch.allclose(model.compute_loss(logits, batch["targets"]), ce["integrated"] + 0.25 * (ce["face"] + ce["speech"]))


def test_multimodal_branches_from_unimodal_checkpoints(tmp_path):
    torch.manual_seed(0)
    paths = {}
    unimodal = {}
    for name, method, dims in (("speech", "merc2020-attncnn", {"mel": 128}),
                               ("face", "merc2020-clstm", {"face": DIMS["face"]}),
                               ("text", "merc2020-text-transformer", {"words": 40})):
        unimodal[name] = METHODS.get(method)(MERC_TASKS, dims, **BRANCH_HP[name])
        paths[f"{name}_checkpoint"] = str(tmp_path / f"{name}.pt")
        torch.save(unimodal[name].state_dict(), paths[f"{name}_checkpoint"])
    model = multimodal(**paths)
    for name, source in unimodal.items():
        loaded = model.branches[name].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    model.eval()
    unimodal["text"].eval()
    batch = make_batch(MM_LENGTHS)
    with torch.no_grad():
        assert torch.allclose(model.branches["text"].embed(batch), unimodal["text"].embed(batch))
    wide = METHODS.get("merc2020-text-transformer")(MERC_TASKS, {"words": 40}, layers=2, ff=32)
    torch.save({"state_dict": wide.state_dict()}, tmp_path / "wide.pt")  # a Lightning-style checkpoint
    with pytest.raises(ValueError, match=r"(?s)text_checkpoint .*wide\.pt does not fit the text branch.*Unexpected key"):
        multimodal(text_checkpoint=str(tmp_path / "wide.pt"))
    with pytest.raises(FileNotFoundError, match="face_checkpoint .*missing.pt does not exist"):
        multimodal(face_checkpoint=str(tmp_path / "missing.pt"))


@pytest.mark.slow
def test_text_transformer_learns_on_merc_fixture(tmp_path):
    root = make_merc2020(tmp_path / "data")
    results = run_bench(BenchConfig(corpus="merc2020", data_root=str(root), methods=["merc2020-text-transformer"],
                                    out=str(tmp_path / "run"), loggers=["csv"], skip_missing=True,
                                    hparams={"merc2020-text-transformer": {"layers": 1, "ff": 128, "lr": 1e-3,
                                                                           "max_epochs": 30, "patience": 10}}))
    test = results[(results["split"] == "test") & (results["metric"] == "accuracy")].set_index("task")["value"]
    assert test["integrated"] > 1 / 7 + 0.2, test  # 7 classes


# --- Luna 2022 wav2vec 2.0 fine-tuning --------------------------------------------------------
def test_w2v2_ft_shapes_padding_and_frozen_feature_encoder():
    torch.manual_seed(0)
    cls = METHODS.get("luna2022-w2v2-ft")
    model = cls((MERC_TASKS[0],), {"wave": 1}, tiny_random=True)
    assert not any(p.requires_grad for p in model.encoder.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.encoder.encoder.parameters())
    model.eval()
    alone = make_batch({"wave": [1600, 2400, 1200]})
    padded = make_batch({"wave": [1600, 2400, 1200, 4000]})
    with torch.no_grad():
        a, b = model(alone)["integrated"], model(padded)["integrated"]
    assert a.shape == (3, 7) and b.shape == (4, 7)
    assert torch.allclose(a, b[:3], atol=1e-4), (a - b[:3]).abs().max()
    with pytest.raises(ValueError, match="needs model_path"):
        cls((MERC_TASKS[0],), {"wave": 1})


def test_waveform_extractor(tmp_path):
    import soundfile as sf

    from mmer_bench.features.audio import Waveform

    sf.write(tmp_path / "a.wav", np.sin(np.arange(48000) / 10.0).astype(np.float32) * 0.5, 16000)
    assert Waveform().extract_clip(str(tmp_path / "a.wav")).shape == (48000, 1)
    assert Waveform(max_seconds=1.0).extract_clip(str(tmp_path / "a.wav")).shape == (16000, 1)


@pytest.mark.slow
def test_w2v2_ft_trains_on_synthetic(tmp_path):
    results = run_bench(BenchConfig(corpus="synthetic", methods=["luna2022-w2v2-ft"], folds=["fold0"],
                                    out=str(tmp_path / "run"), loggers=["csv"], workers=1,
                                    hparams={"luna2022-w2v2-ft": {"tiny_random": True, "max_epochs": 2,
                                                                  "patience": None, "batch_size": 8}}))
    # The runner path end to end (waveform extraction, padding, prediction); learning itself is
    # checked on tone fixtures above, two CPU epochs here are too few for a random encoder.
    accuracy = results.query("split == 'test' and metric == 'accuracy'")["value"]
    assert len(accuracy) == 1 and 0.0 <= accuracy.item() <= 1.0
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    corpus = CORPORA.get("synthetic")()
    test_clips = corpus.plan(corpus.manifest())[0].test
    assert sorted(predictions.query("split == 'test'")["clip_id"].unique()) == sorted(test_clips)


# --- learning on fixtures (video and raw audio are too slow to extract in a unit test) -----------
def test_clstm_learns_face_fixture():
    from learning import coloured_frames, held_out_accuracy

    torch.manual_seed(0)
    model = METHODS.get("merc2020-clstm")(MERC_TASKS, {"face": DIMS["face"]}, **BRANCH_HP["face"], frames=4)
    accuracy = held_out_accuracy(model, lambda y, rng: {"face": coloured_frames(y, rng, FACE, int(rng.integers(2, 6)))},
                                 7, steps=60)
    assert accuracy > 1 / 7 + 0.3, accuracy


def test_multimodal_learns_fixture_with_signal_in_speech_and_face():
    from learning import coloured_frames, held_out_accuracy

    torch.manual_seed(0)
    model = multimodal(lr=3e-3)

    def inputs(label, rng):
        mel = rng.uniform(0, 0.3, (int(rng.integers(30, 60)), DIMS["mel"])).astype(np.float32)
        mel[:, 16 * label: 16 * label + 16] += 0.6  # a class-specific frequency band
        return {"mel": mel, "face": coloured_frames(label, rng, FACE, int(rng.integers(2, 5))),
                "words": rng.normal(size=(int(rng.integers(3, 8)), DIMS["words"])).astype(np.float32)}

    accuracy = held_out_accuracy(model, inputs, 7, steps=60)
    assert accuracy > 1 / 7 + 0.3, accuracy


def test_w2v2_ft_learns_tones_from_a_tiny_random_encoder():
    from learning import held_out_accuracy

    torch.manual_seed(0)
    model = METHODS.get("luna2022-w2v2-ft")((MERC_TASKS[0],), {"wave": 1}, tiny_random=True)

    def inputs(label, rng):
        n = int(rng.integers(3200, 4800))
        t = np.arange(n) / 16000
        wave = 0.5 * np.sin(2 * np.pi * (150 + 250 * label) * t + rng.uniform(0, 6)) + rng.normal(0, 0.05, n)
        return {"wave": wave.astype(np.float32)[:, None]}

    assert model.encoder.config.mask_time_prob == 0.0  # 10-frame masks would hide these short clips
    accuracy = held_out_accuracy(model, inputs, 7, steps=100, lr=3e-3)
    assert accuracy > 1 / 7 + 0.3, accuracy
    masked = METHODS.get("luna2022-w2v2-ft")((MERC_TASKS[0],), {"wave": 1}, tiny_random=True, mask_time_prob=0.3)
    assert masked.encoder.config.mask_time_prob == 0.3


def test_w2v2_ft_from_a_local_checkpoint_fine_tunes_in_training_mode(tmp_path):
    """from_pretrained gives an eval-mode model; Lightning keeps submodule modes, so the method
    must switch the encoder back or its dropout and time masking stay off while fine-tuning."""
    from transformers import Wav2Vec2Model

    from mmer_bench.features.audio_models import tiny_wav2vec2_config

    Wav2Vec2Model(tiny_wav2vec2_config()).save_pretrained(tmp_path / "w2v2")
    model = METHODS.get("luna2022-w2v2-ft")((MERC_TASKS[0],), {"wave": 1}, model_path=str(tmp_path / "w2v2"))
    assert model.encoder.training and all(m.training for m in model.encoder.encoder.modules())
