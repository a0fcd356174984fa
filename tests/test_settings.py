"""Typed settings: YAML values convert to the declared types, and every mistake is an error
that names the file, the key and what was expected."""

import json
import pickle

import pytest

from mmer_bench.cli import main
from mmer_bench.jobs import JobSpec, plan_jobs, resolve_settings, run_spec
from mmer_bench.registry import METHODS, STACKERS
from mmer_bench.runner import BenchConfig
from mmer_bench.settings import SettingsError, TrainRecipe, load_bench_file


def bench_file(tmp_path, text):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


def test_yaml_values_convert_to_the_declared_types(tmp_path):
    conf = load_bench_file(bench_file(tmp_path, "methods: [egemaps-mlp]\nseeds: [0, 1]\n"
                                                "hparams:\n  egemaps-mlp: {lr: 5e-4, dropout: 0}\n"))
    settings = resolve_settings("egemaps-mlp", conf.hparams["egemaps-mlp"])
    assert settings["model"]["lr"] == 5e-4 and isinstance(settings["model"]["lr"], float)
    assert settings["model"]["dropout"] == 0.0 and isinstance(settings["model"]["dropout"], float)
    assert conf.seeds == [0, 1] and conf.trainer.precision == "32-true"


@pytest.mark.parametrize("text, message", [
    ("hparams:\n  egemaps-mlp: {lr: fast}\n", r"bench.yaml: hparams: egemaps-mlp: lr: expected float, got 'fast'"),
    ("hparams:\n  egemaps-mlp: {patiance: 3}\n", r"unknown setting 'patiance'; did you mean 'patience'\?"),
    ("hparams:\n  egemaps-mpl: {lr: 0.1}\n", r"bench.yaml: hparams: unknown method 'egemaps-mpl'; did you mean 'egemaps-mlp'\?"),
    ("methods: egemaps-mlp\n", r"bench.yaml: methods: expected a list of str or null, got 'egemaps-mlp'"),
    ("hparms:\n  egemaps-mlp: {lr: 0.1}\n", r"bench.yaml: unknown setting 'hparms'; did you mean 'hparams'\?"),
    ("trainer: {precison: 16-mixed}\n", r"bench.yaml: trainer: unknown setting 'precison'; did you mean 'precision'\?"),
    ("hparams:\n  egemaps-mlp: {max_epochs: 1.5}\n", r"max_epochs: expected int, got 1.5"),
    ("hparams:\n  luna2022-fusion: {fuse: egemaps-mlp}\n", r"luna2022-fusion: fuse: expected a list of str or null"),
])
def test_mistakes_in_the_benchmark_yaml_name_file_key_and_type(tmp_path, text, message):
    path = bench_file(tmp_path, text)
    with pytest.raises(SettingsError, match=message):
        main(["bench", "synthetic", "--config", str(path), "--out", str(tmp_path / "out"), "--loggers", "csv"])
    assert not (tmp_path / "out" / "jobs").exists()  # refused before anything trains


def test_settings_are_split_by_owner():
    cls = METHODS.get("luna2022-au-mlp")
    settings, recipe = cls.resolve({"hidden": 40, "patience": 5})
    assert settings.hidden == 40 and not hasattr(settings, "patience")
    assert isinstance(recipe, TrainRecipe) and recipe.patience == 5 and recipe.max_epochs == 200
    assert "max_epochs" not in {f for f in vars(settings)}
    assert STACKERS.get("luna2022-fusion").Settings().C == 1.0


@pytest.mark.parametrize("method, key, value", [
    ("meld-baseline-fusion", "max_frames", None),  # every frame
    ("merc2020-clstm", "frames", None),  # every crop
    ("merc2020-attncnn", "width", 0.25),
    ("merc2020-multimodal", "speech_checkpoint", "speech.ckpt"),
])
def test_declared_settings_take_their_documented_values(method, key, value):
    assert resolve_settings(method, {key: value})["model"][key] == value


def test_a_wrongly_typed_setting_names_method_and_key():
    with pytest.raises(SettingsError, match=r"hparams: merc2020-attncnn: width: expected float or null, got 'wide'"):
        resolve_settings("merc2020-attncnn", {"width": "wide"})


def test_a_job_spec_is_json_and_runs_in_another_process(tmp_path):
    """The spec alone runs a job: it survives JSON and pickling, and run_spec is importable at
    top level, so a process pool can run it."""
    from concurrent.futures import ProcessPoolExecutor

    cfg = BenchConfig(corpus="synthetic", methods=["luna2022-au-mlp", "luna2022-fusion"], folds=["fold0"],
                      out=str(tmp_path), loggers=["csv"],
                      hparams={"luna2022-au-mlp": {"max_epochs": 3}, "luna2022-fusion": {"recipe": "in-sample"}})
    specs = plan_jobs(cfg)
    assert [s.kind for s in specs] == ["train", "stack"]
    assert specs[1].depends_on == ("luna2022-au-mlp/fold0-seed0",)
    assert JobSpec.from_json(specs[0].to_json()) == specs[0]
    with ProcessPoolExecutor(1) as pool:
        outcome = pool.submit(run_spec, specs[0].to_json()).result()
    assert outcome == {"job_id": "luna2022-au-mlp/fold0-seed0", "status": "done", "error": None}
    assert run_spec(pickle.loads(pickle.dumps(specs[1])))["status"] == "done"
    assert json.loads((tmp_path / "jobs/luna2022-fusion/fold0-seed0/job.json").read_text())["fused"] == ["luna2022-au-mlp"]
    assert run_spec(specs[0])["status"] == "skipped"


def test_inner_cv_stacker_plans_inner_fold_trainings_before_it():
    """The default stacker recipe trains each fused method on the inner folds of every fold's
    training subjects: train specs under jobs/<method>/inner/, which the stacking job depends on."""
    cfg = BenchConfig(corpus="synthetic", methods=["luna2022-au-mlp", "luna2022-fusion"], folds=["fold0"],
                      out="/tmp/unused", loggers=["csv"])
    specs = plan_jobs(cfg)
    assert [s.kind for s in specs] == ["train"] * 4 + ["stack"]
    inner = [f"luna2022-au-mlp/inner/fold0-inner{j}-seed0" for j in range(3)]
    assert [s.job_id for s in specs[1:4]] == inner
    assert specs[4].depends_on == ("luna2022-au-mlp/fold0-seed0", *inner)
    assert len({s.config_hash for s in specs}) == 5
    with pytest.raises(ValueError, match="recipe 'stack-on-test'"):
        plan_jobs(BenchConfig(corpus="synthetic", methods=["luna2022-au-mlp", "luna2022-fusion"],
                              hparams={"luna2022-fusion": {"recipe": "stack-on-test"}}))
