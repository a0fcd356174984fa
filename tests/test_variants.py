"""Named variants (one registered method as another leaderboard row, with its own overrides) and
early-fusion-mlp, the multimodal method with a path for absent inputs on the corpora we have."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mmer_bench import robustness
from mmer_bench.cli import main
from mmer_bench.jobs import compatible_methods, method_class, method_inputs, plan_jobs
from mmer_bench.registry import METHODS
from mmer_bench.runner import BenchConfig, Runner
from mmer_bench.settings import SettingsError, load_bench_file
from mmer_bench.tasks import ClassificationTask
from mmer_bench.train import CHECKPOINT

MODDROP = {"early-fusion-mlp+moddrop": {"method": "early-fusion-mlp", "modality_dropout": 0.3}}


def test_a_variant_is_its_own_row_of_jobs():
    cfg = BenchConfig(corpus="synthetic", methods=["early-fusion-mlp", "early-fusion-mlp+moddrop"], folds=["fold0"],
                      seeds=[0, 1], out="/tmp/unused", loggers=["csv"], variants=MODDROP,
                      hparams={"early-fusion-mlp": {"hidden": 32}})
    specs = {s.job_id: s for s in plan_jobs(cfg)}
    assert sorted(specs) == ["early-fusion-mlp+moddrop/fold0-seed0", "early-fusion-mlp+moddrop/fold0-seed1",
                             "early-fusion-mlp/fold0-seed0", "early-fusion-mlp/fold0-seed1"]
    plain, variant = specs["early-fusion-mlp/fold0-seed0"], specs["early-fusion-mlp+moddrop/fold0-seed0"]
    assert variant.out.endswith("jobs/early-fusion-mlp+moddrop/fold0-seed0") and variant.method == "early-fusion-mlp+moddrop"
    assert plain.config_hash != variant.config_hash
    assert len({s.config_hash for s in specs.values()}) == 4
    assert variant.config["base_method"] == "early-fusion-mlp" and method_class(variant) is METHODS.get("early-fusion-mlp")
    assert variant.config["variant"] == MODDROP["early-fusion-mlp+moddrop"]
    # The variant is the base as this benchmark configures it (hparams: early-fusion-mlp), plus its own change.
    assert variant.config["settings"]["model"]["modality_dropout"] == 0.3
    assert plain.config["settings"]["model"]["modality_dropout"] == 0.0
    assert variant.config["settings"]["model"]["hidden"] == plain.config["settings"]["model"]["hidden"] == 32
    assert variant.config["inputs"] == plain.config["inputs"] == METHODS.get("early-fusion-mlp").inputs


def test_a_stacker_fuses_the_variants_of_the_run_and_every_compatible_row_includes_them():
    cfg = BenchConfig(corpus="synthetic", methods=["egemaps-mlp", "early-fusion-mlp+moddrop", "luna2022-fusion"],
                      folds=["fold0"], out="/tmp/unused", loggers=["csv"], variants=MODDROP,
                      hparams={"luna2022-fusion": {"recipe": "in-sample"}})
    stack = [s for s in plan_jobs(cfg) if s.kind == "stack"][0]
    assert stack.config["sources"] == ["egemaps-mlp", "early-fusion-mlp+moddrop"]
    assert stack.depends_on == ("egemaps-mlp/fold0-seed0", "early-fusion-mlp+moddrop/fold0-seed0")
    # ``fuse:`` may name a variant; the inner-cv recipe trains it on inner folds under its own row.
    named = plan_jobs(BenchConfig(corpus="synthetic", methods=["early-fusion-mlp+moddrop", "luna2022-fusion"],
                                  folds=["fold0"], out="/tmp/unused", variants=MODDROP,
                                  hparams={"luna2022-fusion": {"fuse": ["early-fusion-mlp+moddrop"], "inner_folds": 2}}))
    inner = [s for s in named if "/inner/" in s.job_id]
    assert [s.job_id for s in inner] == [f"early-fusion-mlp+moddrop/inner/fold0-inner{j}-seed0" for j in range(2)]
    assert all(s.config["settings"]["model"]["modality_dropout"] == 0.3 for s in inner)
    assert named[-1].config["sources"] == ["early-fusion-mlp+moddrop"]
    every = plan_jobs(BenchConfig(corpus="synthetic", folds=["fold0"], out="/tmp/unused", variants=MODDROP))
    assert "early-fusion-mlp+moddrop/fold0-seed0" in {s.job_id for s in every}


@pytest.mark.parametrize("text, message", [
    ("variants:\n  fusion+md: {method: early-fusion-mpl, modality_dropout: 0.3}\n",
     r"bench.yaml: variants: fusion\+md: method: unknown method 'early-fusion-mpl'; did you mean 'early-fusion-mlp'\?"),
    ("variants:\n  egemaps-mlp: {method: early-fusion-mlp}\n",
     r"bench.yaml: variants: egemaps-mlp: 'egemaps-mlp' is the name of a registered method or stacker; a variant "
     r"needs a row name of its own \(e.g. 'egemaps-mlp\+moddrop'\)"),
    ("variants:\n  fusion+md: {modality_dropout: 0.3}\n",
     r"bench.yaml: variants: fusion\+md: method: expected the name of a registered method, got None"),
    ("variants:\n  fusion+md: {method: luna2022-fusion}\n", r"variants: fusion\+md: method: 'luna2022-fusion' is a stacker"),
    ("variants:\n  fusion+md: early-fusion-mlp\n", r"bench.yaml: variants: fusion\+md: expected a mapping"),
    ("variants:\n  fusion+md: {method: early-fusion-mlp, modality_dropot: 0.3}\n",
     r"bench.yaml: variants: fusion\+md: unknown setting 'modality_dropot'; did you mean 'modality_dropout'\?"),
    ("variants:\n  egemaps-mlp+md: {method: egemaps-mlp, modality_dropout: 0.3}\n",
     r"bench.yaml: variants: egemaps-mlp\+md: modality_dropout: egemaps-mlp has no path for absent inputs"),
    ("variants:\n  fusion+md: {method: early-fusion-mlp}\nmethods: [fusion+mb]\n",
     r"bench.yaml: methods: unknown method 'fusion\+mb'; did you mean 'fusion\+md'\?"),
])
def test_variant_mistakes_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        main(["bench", "synthetic", "--config", str(path), "--out", str(tmp_path / "out"), "--loggers", "csv"])
    assert not (tmp_path / "out" / "jobs").exists()  # refused before anything trains


def test_the_variants_of_a_yaml_load_and_the_command_line_may_name_them(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("variants:\n  early-fusion-mlp+moddrop: {method: early-fusion-mlp, modality_dropout: 0.3}\n")
    assert load_bench_file(path).variants == MODDROP
    with pytest.raises(SettingsError, match=r"did you mean 'early-fusion-mlp\+moddrop'\?"):
        main(["bench", "synthetic", "--config", str(path), "--methods", "early-fusion-mlp+modrop",
              "--out", str(tmp_path / "out"), "--loggers", "csv"])


def test_text_is_an_optional_input_of_early_fusion():
    """On a corpus without transcripts (RAVDESS: eGeMAPS and AU means) the method fuses speech and
    face; without face features it is not compatible (only text is optional)."""
    ravdess_like = SimpleNamespace(available_features=lambda manifest: {"egemaps", "au-means"}, dialogue_columns=None, tasks=())
    assert method_inputs("early-fusion-mlp", available={"egemaps", "au-means"}) == {"speech": "egemaps", "face": "au-means"}
    rows = compatible_methods(ravdess_like, None, variants=MODDROP)
    assert "early-fusion-mlp" in rows and "early-fusion-mlp+moddrop" in rows
    speech_only = SimpleNamespace(available_features=lambda manifest: {"egemaps"}, dialogue_columns=None, tasks=())
    assert "early-fusion-mlp" not in compatible_methods(speech_only, None)
    # Built from the inputs it got, it trains with modality dropout over its two modalities.
    tasks = (ClassificationTask("emotion", ("a", "b", "c")),)
    model = METHODS.get("early-fusion-mlp")(tasks, {"speech": 88, "face": 35}, modality_dropout=0.5, hidden=16)
    batch = {"inputs": {"speech": torch.randn(8, 88), "face": torch.randn(8, 35)}, "masks": {},
             "targets": {"emotion": torch.arange(8) % 3}, "clip_id": [str(i) for i in range(8)]}
    assert model(model.augment_batch(batch))["emotion"].shape == (8, 3)
    assert set(model.present_groups()) == {"speech", "face"}


def test_an_absent_input_counts_as_its_training_mean():
    tasks = (ClassificationTask("emotion", ("a", "b", "c")),)
    torch.manual_seed(0)
    model = METHODS.get("early-fusion-mlp")(tasks, {"speech": 4, "face": 3, "text": 5}, hidden=8).eval()
    x = {"speech": torch.randn(2, 4), "face": torch.randn(2, 3), "text": torch.randn(2, 5)}
    removed = {"inputs": {**x, "face": torch.randn(2, 3)}, "masks": {"face": torch.tensor([[False], [True]])}}
    zeros = {"inputs": {**x, "face": torch.cat([torch.zeros(1, 3), removed["inputs"]["face"][1:]])}, "masks": {}}
    assert torch.allclose(model(removed)["emotion"], model(zeros)["emotion"])


# --- a real run: the variant row, robustness, the trained models --------------------------------
@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    config = BenchConfig(corpus="synthetic", methods=["luna2022-au-mlp", "early-fusion-mlp", "early-fusion-mlp+moddrop"],
                         folds=["fold0"], out=str(out), loggers=["csv"], workers=1, variants=MODDROP,
                         publish=str(out / "published"))
    results = Runner(config).run()
    rob = robustness.score_run(out, ["face-removed"], workers=1)
    return out, results, rob


@pytest.mark.slow
def test_the_variant_row_reaches_results_and_leaderboard(variant_run):
    out, results, _ = variant_run
    test = results.query("split == 'test' and metric == 'accuracy'").set_index("method")["value"]
    assert set(test.index) == {"luna2022-au-mlp", "early-fusion-mlp", "early-fusion-mlp+moddrop"}
    for method in ("early-fusion-mlp", "early-fusion-mlp+moddrop"):
        assert test[method] > 1 / 6 + 0.25, f"{method} only reaches {test[method]:.2f}"
    rows = results.drop_duplicates("method").set_index("method")["base_method"]
    assert rows["early-fusion-mlp+moddrop"] == "early-fusion-mlp" and rows["early-fusion-mlp"] == ""
    board = (out / "leaderboard.md").read_text()
    assert "| early-fusion-mlp+moddrop" in board and "| early-fusion-mlp " in board
    assert "early-fusion-mlp+moddrop" in (out / "published" / "synthetic.html").read_text()
    details = json.loads((out / "jobs/early-fusion-mlp+moddrop/fold0-seed0/job.json").read_text())
    assert details["variant_of"] == "early-fusion-mlp" and details["variant_overrides"] == {"modality_dropout": 0.3}
    assert details["hparams"]["modality_dropout"] == 0.3


@pytest.mark.slow
def test_moddrop_trains_another_model(variant_run):
    out, _, _ = variant_run
    plain, moddrop = (torch.load(out / f"jobs/{m}/fold0-seed0" / CHECKPOINT, weights_only=True)["state_dict"]
                      for m in ("early-fusion-mlp", "early-fusion-mlp+moddrop"))
    assert plain.keys() == moddrop.keys()
    assert any(not torch.equal(plain[k], moddrop[k]) for k in plain)


@pytest.mark.slow
def test_face_removed_scores_the_fusion_and_not_the_face_only_method(variant_run):
    _, _, rob = variant_run
    rows = rob.query("metric == 'accuracy' or status != 'scored'").drop_duplicates("method").set_index("method")
    assert rows.loc["luna2022-au-mlp", "status"] == "n/a" and np.isnan(rows.loc["luna2022-au-mlp", "value"])
    for method in ("early-fusion-mlp", "early-fusion-mlp+moddrop"):
        assert rows.loc[method, "status"] == "scored"
        assert 0 <= rows.loc[method, "value"] <= 1
    assert pd.notna(rows.loc["early-fusion-mlp+moddrop", "value"])
