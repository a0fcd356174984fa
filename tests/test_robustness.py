"""Test-time conditions (features/perturb.py) and scoring under them (robustness.py): each
perturbation's determinism and level, clean store keys unchanged, only the test part perturbed,
absent inputs as all-false masks, the n/a rule and the stacker's fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmer_bench.data import CorpusDataModule, collate
from mmer_bench.features import perturb
from mmer_bench.features.base import extract
from mmer_bench.features.store import FeatureStore, stable_hash
from mmer_bench.methods import augment
from mmer_bench.methods.layers import present
from mmer_bench.registry import CORPORA, EXTRACTORS, METHODS
from mmer_bench.robustness import (
    NA,
    NOT_APPLICABLE,
    SCORED,
    UNAFFECTED,
    ConditionDataModule,
    condition_status,
    evaluate_condition,
    stack_condition,
)


@pytest.fixture(scope="module")
def synthetic():
    corpus = CORPORA.get("synthetic")()
    manifest = corpus.manifest()
    return corpus, manifest, corpus.plan(manifest)[0]


def part_of(manifest, fold):
    return manifest[manifest["clip_id"].isin(fold.test)].reset_index(drop=True)


def perturbed(condition, extractor, part, store, corpus, clean=None, seed=0):
    return perturb.perturbed_features(condition, extractor, part, corpus.manifest_hash(part), store, clean, seed, 1)


@pytest.mark.parametrize("name", [c.name for c in perturb.CONDITIONS.values() if c.kind in ("white", "babble")])
def test_speech_noise_hits_its_snr_and_is_deterministic(synthetic, tmp_path, name):
    corpus, manifest, fold = synthetic
    condition = perturb.get_condition(name)
    part = part_of(manifest, fold).iloc[:12]
    wave = EXTRACTORS.get("waveform")()
    clean = extract(wave, part, corpus.manifest_hash(part), FeatureStore(tmp_path / "clean"), 1)
    noisy = perturbed(condition, wave, part, FeatureStore(tmp_path / "a"), corpus)
    again = perturbed(condition, wave, part, FeatureStore(tmp_path / "b"), corpus)  # a fresh store: recomputed
    other_seed = perturbed(condition, wave, part, FeatureStore(tmp_path / "a"), corpus, seed=1)
    for clip in part["clip_id"]:
        x, y = clean.arrays[clip][:, 0], noisy.arrays[clip][:, 0]
        assert abs(perturb.snr_db(x, y) - condition.level) < 0.5, clip
        np.testing.assert_array_equal(y, again.arrays[clip][:, 0])
        assert not np.allclose(y, other_seed.arrays[clip][:, 0])


def test_a_stale_perturbed_entry_is_extracted_again_not_read(synthetic, tmp_path, caplog):
    # A perturbed entry written before the store kept checksums (as an old cache holds) is set
    # aside and extracted anew: scoring never reads it and never fails on it.
    import pyarrow.parquet as pq

    corpus, manifest, fold = synthetic
    condition = perturb.get_condition("speech-white-10db")
    part = part_of(manifest, fold).iloc[:4]
    wave, store = EXTRACTORS.get("waveform")(), FeatureStore(tmp_path)
    fresh = perturbed(condition, wave, part, store, corpus)
    key = wave.cache_key(corpus.manifest_hash(part), perturbation=condition.key(0))
    path = next((tmp_path / wave.name).glob(f"{key}*.parquet"))
    old = pq.read_table(path)
    pq.write_table(old.drop(["checksum"]).replace_schema_metadata(old.schema.metadata), path)
    with pytest.raises(Exception, match="before the store kept checksums"):
        store.read(wave.name, key)
    again = perturbed(condition, wave, part, store, corpus)
    assert "extracting waveform under speech-white-10db again" in caplog.text
    for clip in part["clip_id"]:
        np.testing.assert_array_equal(fresh.arrays[clip], again.arrays[clip])
    assert store.read(wave.name, key).arrays.keys() == fresh.arrays.keys()


def test_babble_comes_from_other_clips_of_the_part_and_differs_from_white(synthetic, tmp_path):
    corpus, manifest, fold = synthetic
    part = part_of(manifest, fold)
    rng = np.random.default_rng(0)
    for clip, subject in zip(part["clip_id"][:10], part["subject"][:10]):
        talkers = perturb.babble_talkers(part, clip, "audio_path", rng)
        assert len(talkers) == perturb.BABBLE_TALKERS
        rows = part.set_index("audio_path").loc[talkers]
        assert set(rows["clip_id"]) <= set(fold.test) and clip not in set(rows["clip_id"])
        assert (rows["subject"] != subject).all()  # the part has other subjects: babble uses them
    wave = EXTRACTORS.get("waveform")()
    store = FeatureStore(tmp_path)
    small = part.iloc[:6]
    white = perturbed(perturb.get_condition("speech-white-5db"), wave, small, store, corpus)
    bab = perturbed(perturb.get_condition("speech-babble-5db"), wave, small, store, corpus)
    clip = small["clip_id"].iloc[0]
    assert not np.allclose(white.arrays[clip], bab.arrays[clip])


def test_clean_keys_are_unchanged_and_perturbed_keys_name_the_condition(synthetic, tmp_path, monkeypatch):
    corpus, manifest, fold = synthetic
    ex = EXTRACTORS.get("egemaps")()
    h = "abc"
    legacy = stable_hash({"name": ex.name, "version": ex.version, "params": ex.params(), "manifest": h})
    assert ex.cache_key(h) == legacy
    keys = {ex.cache_key(h, perturb.get_condition(n).key(s)) for n in ("speech-white-10db", "speech-white-5db",
                                                                        "speech-babble-10db") for s in (0, 1)}
    assert len(keys) == 6 and legacy not in keys
    # A re-run reads the stored entry: no audio is perturbed or extracted a second time.
    part = part_of(manifest, fold).iloc[:4]
    store = FeatureStore(tmp_path)
    wave = EXTRACTORS.get("waveform")()
    first = perturbed(perturb.get_condition("speech-white-10db"), wave, part, store, corpus)
    monkeypatch.setattr(perturb, "noisy_clip", lambda *a, **k: pytest.fail("perturbed again"))
    second = perturbed(perturb.get_condition("speech-white-10db"), wave, part, store, corpus)
    for clip in part["clip_id"]:
        np.testing.assert_array_equal(first.arrays[clip], second.arrays[clip])


def test_face_noise_level_frames_dropped_and_not_applicable(synthetic, tmp_path):
    corpus, manifest, fold = synthetic
    part = part_of(manifest, fold)
    store = FeatureStore(tmp_path)
    means = EXTRACTORS.get("au-means")()
    clean = extract(means, part, corpus.manifest_hash(part), store, 1)
    for name in ("face-noise-0.5sd", "face-noise-1sd"):
        condition = perturb.get_condition(name)
        noisy = perturbed(condition, means, part, store, corpus, clean)
        again = perturbed(condition, means, part, FeatureStore(tmp_path / name), corpus, clean)
        ids = list(part["clip_id"])
        diff = np.stack([noisy.arrays[c] - clean.arrays[c] for c in ids])
        sd = np.stack([clean.arrays[c] for c in ids]).std(axis=0)
        varying = sd > 0
        ratio = diff[:, varying].std(axis=0) / sd[varying]
        assert abs(ratio.mean() - condition.level) < 0.1 * condition.level
        for c in ids:
            np.testing.assert_array_equal(noisy.arrays[c], again.arrays[c])
    # Frames dropped from per-frame AUs: the share asked for, never an empty clip.
    seq = EXTRACTORS.get("au-sequence")()
    clean_seq = extract(seq, part, corpus.manifest_hash(part), store, 1)
    drop = perturb.get_condition("face-drop-50pct")
    dropped = perturbed(drop, seq, part, store, corpus, clean_seq)
    kept = sum(len(dropped.arrays[c]) for c in part["clip_id"]) / sum(len(clean_seq.arrays[c]) for c in part["clip_id"])
    assert abs(kept - 0.5) < 0.05
    assert min(len(dropped.arrays[c]) for c in part["clip_id"]) >= 1
    # ... and from the OpenFace CSVs behind per-clip means, before the mean is taken.
    dropped_means = perturbed(perturb.get_condition("face-drop-90pct"), means, part, store, corpus, clean)
    changed = [not np.allclose(dropped_means.arrays[c], clean.arrays[c]) for c in part["clip_id"]]
    assert np.mean(changed) > 0.9
    # A released table of means has no frames to drop.
    table_only = part.drop(columns=["openface_path"])
    with pytest.raises(perturb.NotApplicable, match="no per-frame source"):
        perturbed(drop, means, table_only, store, corpus, clean)
    with pytest.raises(perturb.NotApplicable, match="degrades face"):
        perturbed(drop, EXTRACTORS.get("egemaps")(), part, store, corpus)


def test_word_dropout_share_and_determinism(synthetic, tmp_path):
    corpus, manifest, fold = synthetic
    part = part_of(manifest, fold)
    for name, share in (("text-dropout-10pct", 0.1), ("text-dropout-30pct", 0.3)):
        condition = perturb.get_condition(name)
        out, _ = perturb._text_media(condition, part, 0)
        again, _ = perturb._text_media(condition, part, 0)
        assert list(out["text"]) == list(again["text"])
        words = sum(len(t.split()) for t in part["text"])
        kept = sum(len(t.split()) for t in out["text"])
        assert abs(1 - kept / words - share) < 0.05
        assert all(len(t.split()) >= 1 for t in out["text"])
    # Through a text extractor: the perturbed transcripts change its features, under their own key.
    store = FeatureStore(tmp_path)
    glove = EXTRACTORS.get("glove")()
    small = part.iloc[:8]
    clean = extract(glove, small, corpus.manifest_hash(small), store, 1)
    out = perturbed(perturb.get_condition("text-dropout-30pct"), glove, small, store, corpus, clean)
    assert any(len(out.arrays[c]) < len(clean.arrays[c]) for c in small["clip_id"])


def datamodule(cls, corpus, manifest, fold, inputs, **kw):
    dm = cls(corpus, manifest, fold, inputs, {"speech": "standard"}, FeatureStore(), batch_size=16, workers=1, **kw)
    dm.setup()
    return dm


def test_only_the_test_part_is_perturbed_and_removed_inputs_are_absent(synthetic):
    corpus, manifest, fold = synthetic
    inputs = {"speech": "egemaps", "au": "au-means"}
    clean = datamodule(CorpusDataModule, corpus, manifest, fold, inputs)
    noisy = datamodule(ConditionDataModule, corpus, manifest, fold, inputs,
                       condition=perturb.get_condition("speech-white-0db"))
    for part in ("train", "val", "test"):
        for a, b in zip(clean.clips(part), noisy.clips(part)):
            assert a["clip_id"] == b["clip_id"]
            np.testing.assert_array_equal(a["inputs"]["au"], b["inputs"]["au"])  # face untouched everywhere
            same = np.array_equal(a["inputs"]["speech"], b["inputs"]["speech"])
            assert same == (part != "test"), (part, a["clip_id"])
    removed = datamodule(ConditionDataModule, corpus, manifest, fold, inputs,
                         condition=perturb.get_condition("speech-removed"))
    for part in ("train", "val"):
        for a, b in zip(clean.clips(part), removed.clips(part)):
            np.testing.assert_array_equal(a["inputs"]["speech"], b["inputs"]["speech"])
    batch = next(iter(removed.part_dataloader("test")))
    assert not present(batch, "speech").any() and present(batch, "au").all()
    assert batch["masks"]["speech"].shape == (len(batch["clip_id"]), 1)
    assert not (batch["inputs"]["speech"] != 0).any()
    assert "au" not in batch["masks"]  # a vector input that every clip has carries no mask, as before
    train_batch = next(iter(removed.part_dataloader("train")))
    assert "speech" not in train_batch["masks"]


def test_collate_mixed_absence_and_modality_dropout_keeps_one_modality():
    items = [{"clip_id": "a", "inputs": {"s": np.ones((3, 2), np.float32), "v": np.ones(4, np.float32)}, "targets": {}},
             {"clip_id": "b", "inputs": {"s": np.zeros((1, 2), np.float32), "v": np.ones(4, np.float32)},
              "targets": {}, "absent": ["s"]}]
    batch = collate(items)
    assert batch["masks"]["s"].tolist() == [[True, True, True], [False, False, False]]
    assert present(batch, "s").tolist() == [True, False] and present(batch, "v").tolist() == [True, True]
    torch.manual_seed(0)
    big = {"clip_id": list(range(200)), "inputs": {"s": torch.ones(200, 5, 2), "v": torch.ones(200, 4)},
           "masks": {"s": torch.ones(200, 5, dtype=torch.bool)}, "targets": {}}
    out = augment.modality_dropout(big, {"speech": ["s"], "face": ["v"]}, 0.5)
    s, v = present(out, "s"), present(out, "v")
    assert (s | v).all()  # never every modality of a clip
    assert 0.2 < (~s).float().mean() < 0.5 and 0.2 < (~v).float().mean() < 0.5
    assert (out["inputs"]["v"][~v] == 0).all() and (out["inputs"]["s"][~s] == 0).all()


def test_status_rule(synthetic):
    speech_removed = perturb.get_condition("speech-removed")
    mlp = METHODS.get("egemaps-mlp")
    assert condition_status(mlp, mlp.inputs, speech_removed)[0] == NA
    assert condition_status(mlp, mlp.inputs, perturb.get_condition("speech-white-5db"))[0] == SCORED
    assert condition_status(mlp, mlp.inputs, perturb.get_condition("face-removed"))[0] == UNAFFECTED
    seq = METHODS.get("seq-mean-mlp")
    assert condition_status(seq, seq.inputs, speech_removed)[0] == SCORED  # handles absent inputs
    fusion = METHODS.get("meld-baseline-fusion")
    status, reason = condition_status(fusion, fusion.inputs, speech_removed)
    assert status == NA and "no path for an absent" in reason


def test_a_unimodal_method_without_its_modality_is_na_never_scored(synthetic):
    corpus, manifest, fold = synthetic
    cls = METHODS.get("egemaps-mlp")
    model = cls(corpus.tasks, {"speech": 88})
    model.forward = lambda batch: pytest.fail("scored on placeholder zeros")
    status, reason, preds = evaluate_condition(model, corpus, manifest, fold, cls.inputs, cls.scaling, FeatureStore(),
                                               perturb.get_condition("speech-removed"), workers=1)
    assert (status, preds) == (NA, None) and "only modality" in reason


def test_a_method_that_handles_absent_inputs_sees_all_false_masks(synthetic):
    from mmer_bench.methods.base import EmotionRecognizer

    class SpeechAndFace(EmotionRecognizer):
        inputs = {"speech": "egemaps", "au": "au-means"}
        scaling = {"speech": "standard", "au": "minmax"}
        handles_absent_inputs = True
        seen: list = []

        def build(self):
            self.heads = self.task_heads(self.input_dims["au"])

        def forward(self, batch):
            self.seen.append((present(batch, "speech").any().item(), present(batch, "au").all().item()))
            return self.apply_heads(batch["inputs"]["au"])

    corpus, manifest, fold = synthetic
    model = SpeechAndFace(corpus.tasks, {"speech": 88, "au": 35})
    status, _, preds = evaluate_condition(model, corpus, manifest, fold, model.inputs, model.scaling, FeatureStore(),
                                          perturb.get_condition("speech-removed"), workers=1)
    assert status == SCORED and set(model.seen) == {(False, True)}
    assert preds["emotion"]["clip_id"] == list(fold.test)


def test_face_drop_on_a_table_of_means_is_not_applicable(synthetic):
    corpus, manifest, fold = synthetic
    table_only = manifest.drop(columns=["openface_path"])
    cls = METHODS.get("luna2022-au-mlp")
    model = cls(corpus.tasks, {"au": 35})
    status, reason, preds = evaluate_condition(model, corpus, table_only, fold, cls.inputs, cls.scaling,
                                               FeatureStore(), perturb.get_condition("face-drop-50pct"), workers=1)
    assert status == NOT_APPLICABLE and preds is None


def test_stacker_falls_back_to_the_sources_it_still_has():
    from mmer_bench.fusion import align, fuse
    from mmer_bench.tasks import ClassificationTask

    task = ClassificationTask("emotion", ("a", "b", "c"))
    rng = np.random.default_rng(0)
    labels = pd.Series(rng.integers(0, 3, 60), index=[f"c{i}" for i in range(60)])

    def posteriors(ids, noise):
        onehot = np.eye(3)[labels.loc[ids].to_numpy()]
        p = np.abs(onehot + noise * rng.random((len(ids), 3)))
        return pd.DataFrame(p / p.sum(1, keepdims=True), columns=list(task.classes)).assign(clip_id=ids)

    train, test = list(labels.index[:40]), list(labels.index[40:])
    face = (UNAFFECTED, posteriors(train, 1.0), posteriors(test, 1.0))
    speech_train = posteriors(train, 0.5)
    status, reason, probs, ids = stack_condition(task, {"face": face, "speech": (NA, speech_train, None)}, labels)
    assert status == SCORED and "without ['speech']" in reason
    only_face = fuse(align({"face": face[1]}, task.classes, "t"), labels.loc[sorted(train)].to_numpy(),
                     align({"face": face[2]}, task.classes, "t"))
    np.testing.assert_allclose(probs, only_face)
    assert stack_condition(task, {"speech": (NA, speech_train, None)}, labels)[0] == NA


def test_multibench_relative_and_effective_robustness():
    from mmer_bench.robustness_report import effective_robustness, relative_robustness

    assert relative_robustness([0.8, 0.8, 0.8, 0.8, 0.8]) == pytest.approx(0.8)
    # Trapezoids over levels 0, 0.5, 1: (0.9 + 0.7) / 4 + (0.7 + 0.3) / 4.
    assert relative_robustness([0.9, 0.7, 0.3]) == pytest.approx(0.65)
    reference = [0.9, 0.7, 0.3]
    assert effective_robustness(reference, reference) == pytest.approx(0.0)
    # Same drop as the reference from a lower clean score: 0; a slower drop: positive.
    assert effective_robustness([0.6, 0.4, 0.0], reference) == pytest.approx(0.0)
    assert effective_robustness([0.6, 0.55, 0.5], reference) == pytest.approx(0.15 + 0.5)
