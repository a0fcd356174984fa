"""`mmer fuse` on posteriors in the documented layout: DIR/fold<k>/{train,test}.csv."""

import ast
import json

import numpy as np
import pandas as pd
import pytest

from mmer_bench.cli import main
from mmer_bench.corpora.ravdess import EMOTIONS
from mmer_bench.fusion import FusionInputError

ALPHABETICAL = sorted(EMOTIONS)  # the class order of the wav2vec2 and BiLSTM files


def clip_id(video_name: str) -> str:
    return video_name.removesuffix(".csv").split("-", 1)[1]  # drop the modality field


def write_layout(out, fold, part, ids, values, classes):
    frame = pd.DataFrame(np.asarray(values, dtype=float), columns=classes)[list(EMOTIONS)]
    frame.insert(0, "clip_id", [clip_id(i) for i in ids])
    (out / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / f"fold{fold}" / f"{part}.csv", index=False)


def convert_luna2022(root, out):
    """The published per-fold posteriors of Luna-Jimenez et al. 2022 -> our layout, per system."""
    posteriors = root / "ravdess" / "luna2022_posteriors"
    (w2v_run,) = (posteriors / "wav2Vec" / "posteriors").iterdir()
    for k in range(5):
        for part, name in (("train", "train"), ("test", "test")):
            w2v = pd.read_csv(w2v_run / f"fold{k}" / f"posteriors_{name}.csv", sep=";")
            write_layout(out / "wav2vec2", k, part, w2v["name"], w2v[[f"embs{i}" for i in range(8)]], ALPHABETICAL)
            mlp = pd.read_csv(posteriors / "avg_MLP80_AUs" / "posteriors" / f"{name}_fold{k}.csv", sep=";")
            write_layout(out / "au-mlp", k, part, mlp["video_name"], mlp[[f"embs{i}" for i in range(8)]], list(EMOTIONS))
            bilstm_part = "train" if part == "train" else "val"  # their "val" file is the test fold
            path = posteriors / "AUs_biLSTM_6213" / "posteriorsv2" / f"RAVDESS_AUs-{bilstm_part}--fold_{k + 1}_outof_5-posteriors.csv"
            bilstm = pd.read_csv(path, header=None, names=["tag", "posteriors"])
            values = [ast.literal_eval(v) for v in bilstm["posteriors"]]
            write_layout(out / "au-bilstm", k, part, bilstm["tag"], values, ALPHABETICAL)


@pytest.mark.shared_data
def test_fuse_reproduces_luna2022_late_fusion(shared_data, tmp_path, capsys):
    convert_luna2022(shared_data, tmp_path / "posteriors")
    dirs = [str(tmp_path / "posteriors" / s) for s in ("wav2vec2", "au-mlp", "au-bilstm")]
    # the published posteriors of the training clips are in-sample: the paper's recipe
    assert main(["fuse", "--corpus", "ravdess", "--posteriors", *dirs, "--out", str(tmp_path / "fused"),
                 "--recipe", "in-sample"]) == 0
    summary = json.loads((tmp_path / "fused" / "summary.json").read_text())
    assert [f["n_test"] for f in summary["folds"]] == [300, 300, 300, 300, 240]  # every clip once
    assert abs(100 * summary["mean_accuracy"] - 86.70) < 0.5, summary["mean_accuracy"]
    assert "mean test accuracy over 5 folds" in capsys.readouterr().out
    fused = pd.read_csv(tmp_path / "fused" / "fold0" / "test.csv")
    assert list(fused.columns) == ["clip_id", *EMOTIONS] and len(fused) == 300


def synthetic_posteriors(out, informative: bool, rng):
    """Two folds of 8-class posteriors for RAVDESS-named clips; labels come from the clip ids."""
    for k in range(2):
        for part, actors in (("train", range(1 + k, 20, 2)), ("oof", range(1 + k, 20, 2)), ("test", range(21 + k, 25, 2))):
            ids, values = [], []
            for actor in actors:
                for emotion in range(1, 9):
                    for statement in (1, 2):
                        ids.append(f"01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}")
                        logits = rng.normal(0, 1, 8)
                        logits[emotion - 1] += 2.5 if informative else 0
                        values.append(logits)
            frame = pd.DataFrame(values, columns=list(EMOTIONS))
            frame.insert(0, "clip_id", ids)
            (out / f"fold{k}").mkdir(parents=True, exist_ok=True)
            frame.to_csv(out / f"fold{k}" / f"{part}.csv", index=False)


def test_fuse_learns_from_informative_sources(tmp_path):
    rng = np.random.default_rng(0)
    synthetic_posteriors(tmp_path / "good", True, rng)
    synthetic_posteriors(tmp_path / "noise", False, rng)
    main(["fuse", "--corpus", "ravdess", "--posteriors", str(tmp_path / "good"), str(tmp_path / "noise"),
          "--out", str(tmp_path / "out")])
    accuracy = json.loads((tmp_path / "out" / "summary.json").read_text())["mean_accuracy"]
    assert accuracy > 0.6  # chance is 1/8
    main(["fuse", "--corpus", "ravdess", "--posteriors", str(tmp_path / "noise"), "--out", str(tmp_path / "out2")])
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["mean_accuracy"] < 0.35


def test_fuse_rejects_mismatched_sources(tmp_path):
    rng = np.random.default_rng(1)
    synthetic_posteriors(tmp_path / "a", True, rng)
    synthetic_posteriors(tmp_path / "b", True, rng)
    test = pd.read_csv(tmp_path / "b" / "fold0" / "test.csv").iloc[1:]  # one clip missing
    test.to_csv(tmp_path / "b" / "fold0" / "test.csv", index=False)
    with pytest.raises(FusionInputError, match="lack posteriors"):
        main(["fuse", "--corpus", "ravdess", "--posteriors", str(tmp_path / "a"), str(tmp_path / "b"),
              "--out", str(tmp_path / "out")])
    (tmp_path / "a" / "fold1" / "train.csv").unlink()
    with pytest.raises(FusionInputError, match="train.csv is missing"):
        main(["fuse", "--corpus", "ravdess", "--posteriors", str(tmp_path / "a"), "--out", str(tmp_path / "out"),
              "--recipe", "in-sample"])
    (tmp_path / "a" / "fold1" / "oof.csv").unlink()
    with pytest.raises(FusionInputError, match="oof.csv is missing: the inner-cv recipe fits the stacker on out-of-fold"):
        main(["fuse", "--corpus", "ravdess", "--posteriors", str(tmp_path / "a"), "--out", str(tmp_path / "out")])
