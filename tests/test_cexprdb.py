"""C-EXPR-DB: the documented layout, the released splits (one with val == test), leakage and
format errors, frame -> video aggregation, the frame-level base and a short bench run."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.cexprdb import cexpr_videos, make_cexprdb, write_split

from mmer_bench import cli
from mmer_bench.aggregate import aggregate_by_video, aggregate_frames
from mmer_bench.corpora.base import CorpusNotFoundError
from mmer_bench.corpora.cexprdb import EXPRESSIONS, CExprDB, CExprFormatError
from mmer_bench.methods.frames import AUFrameMLP
from mmer_bench.protocols import LeakageError
from mmer_bench.runner import BenchConfig, run_bench


def folder(root):
    return root / "c-expr-db"


def listed(root, split, part):
    """The video ids of a fixture split list (without its comment line)."""
    lines = (folder(root) / "splits" / split / f"{part}.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_parse_layout(cexprdb_root):
    corpus = CExprDB(cexprdb_root)
    manifest = corpus.manifest().set_index("clip_id")
    videos = cexpr_videos()
    assert len(manifest) == 21 and corpus.other_videos == ["90-1-640x360", "91-1-640x360"]
    # Labels written as a name, in snake case or as an index all read back as the same class.
    for video, name in videos.items():
        if name != "Other":
            assert EXPRESSIONS[manifest.loc[video, "expression"]] == name == manifest.loc[video, "label"]
    assert (manifest["video"] == manifest.index).all()
    assert manifest["video_path"].isna().sum() == 1 and pd.isna(manifest.loc["30-6-1920x1080", "video_path"])
    assert manifest["openface_path"].notna().all()
    assert corpus.available_features(manifest.reset_index()) >= {"au-sequence"}
    assert corpus.primary_metric == "macro_f1" and corpus.report_metrics == ("macro_f1", "accuracy", "weighted_f1")


def test_include_other_adds_a_class(cexprdb_root):
    corpus = CExprDB(cexprdb_root, include_other=True)
    manifest = corpus.manifest()
    assert corpus.tasks[0].classes[-1] == "Other" and corpus.tasks[0].num_classes == 8
    assert len(manifest) == 23 and (manifest["expression"] == 7).sum() == 2
    assert all(f.info["dropped_other"] == 0 for f in corpus.plan(manifest))


def test_released_splits_and_the_val_equals_test_split(cexprdb_root, caplog):
    corpus = CExprDB(cexprdb_root)
    manifest = corpus.manifest()
    with caplog.at_level(logging.WARNING):
        folds = corpus.plan(manifest)  # check_disjoint by video passes
    assert [f.name for f in folds] == [f"split{k}" for k in range(1, 6)]
    assert corpus.group_columns == ("video",)
    flagged = {f.name: f.info["val_equals_test"] for f in folds}
    assert flagged == {"split1": False, "split2": False, "split3": True, "split4": False, "split5": False}
    assert "split3" in caplog.text and "equals its test list" in caplog.text
    split3 = folds[2]
    released_test = listed(cexprdb_root, "split3", "test")
    assert set(split3.test) == set(released_test)
    # Its validation videos come from its own training list, never from the test list.
    released_train = set(listed(cexprdb_root, "split3", "train"))
    assert set(split3.val) <= released_train and not set(split3.val) & set(split3.test)
    assert "warning" in split3.info and "val_source" in split3.info
    assert all(f.info["dropped_other"] == 2 for f in folds)  # the Other videos of every train list
    assert folds == CExprDB(cexprdb_root).plan(manifest)  # the drawn validation set is reproducible


def test_val_equals_test_policies(cexprdb_root):
    manifest = CExprDB(cexprdb_root).manifest()
    assert [f.name for f in CExprDB(cexprdb_root, val_equals_test="drop").plan(manifest)] == ["split1", "split2", "split4", "split5"]
    with pytest.raises(LeakageError, match=r"split3: its val list .*split3/val\.txt"):
        CExprDB(cexprdb_root, val_equals_test="error").plan(manifest)
    with pytest.raises(ValueError, match="val_equals_test"):
        CExprDB(cexprdb_root, val_equals_test="keep")


@pytest.mark.parametrize("source", ["train", "val"])
def test_leakage_is_rejected(cexprdb_root, source):
    lists = {p: listed(cexprdb_root, "split2", p) for p in ("train", "val", "test")}
    lists["test"].append(lists[source][0])  # a video listed in test as well
    write_split(folder(cexprdb_root), "split2", lists["train"], lists["val"], lists["test"])
    corpus = CExprDB(cexprdb_root)
    with pytest.raises(LeakageError, match=rf"split2: clip {lists[source][0]} is in both {source} and test"):
        corpus.plan(corpus.manifest())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: (f / "labels.csv").write_text("video_id,label\nv1,Happily Surprised\nv2,Surprisingly Happy\n"),
         r"labels\.csv, line 3: unknown label 'Surprisingly Happy'"),
        (lambda f: (f / "labels.csv").write_text("video_id,label\nv1,Sadly Angry\nv1,sadly-angry\n"),
         r"labels\.csv, line 3: video v1 is already labelled on line 2"),
        (lambda f: (f / "labels.csv").write_text("video,expression\nv1,Sadly Angry\n"),
         r"labels\.csv: the header must name the columns video_id and label"),
        (lambda f: (f / "splits/split4/val.txt").write_text("10-0-1920x1080\nno-such-video\n"),
         r"split4/val\.txt, line 2: video no-such-video is not in labels\.csv"),
        (lambda f: (f / "splits/split1/test.txt").write_text("10-0-1920x1080\n10-0-1920x1080.mp4\n"),
         r"split1/test\.txt, line 2: video 10-0-1920x1080 is already listed on line 1"),
        (lambda f: (f / "splits/split5/train.txt").unlink(), r"split5/train\.txt is missing"),
    ],
)
def test_bad_input_names_the_file(cexprdb_root, edit, message):
    edit(folder(cexprdb_root))
    with pytest.raises(CExprFormatError, match=message):
        CExprDB(cexprdb_root).manifest()


def test_missing_corpus_says_where_to_ask_and_put(tmp_path):
    with pytest.raises(CorpusNotFoundError) as error:
        CExprDB(tmp_path).manifest()
    text = str(error.value)
    assert "ABAW" in text and "EULA" in text and str(tmp_path / "c-expr-db") in text
    assert "labels.csv" in text and "videos/<video_id>.mp4" in text and "splits/split1..split5" in text
    make_cexprdb(tmp_path)
    for split in (tmp_path / "c-expr-db/splits").iterdir():
        for part in split.iterdir():
            part.unlink()
        split.rmdir()
    with pytest.raises(CorpusNotFoundError, match="holds no split folders"):
        CExprDB(tmp_path).manifest()


def test_describe_reports_the_val_equals_test_split(cexprdb_root, capsys):
    assert cli.main(["describe", "cexprdb", "--data-root", str(cexprdb_root)]) == 0
    out = capsys.readouterr().out
    assert "cexprdb: 21 clips, 21 videos\n" in out  # counted by video: actors are not annotated
    assert "WARNING split3: C-EXPR-DB split3: its val list" in out and "'val_equals_test': True" in out
    assert "  video (video_path): 20 of 21 clips" in out and "  au (openface_path): 21 of 21 clips" in out
    assert "missing videos/<id>.mp4: 1 (30-6-1920x1080)" in out
    assert "videos labelled Other: 2 (left out" in out
    assert "split3 test (4 videos): Fearfully Surprised 1," in out


# --- aggregation of frames into videos -----------------------------------------------------------

# One video, 3 classes: three frames lean weakly to class 1, two strongly to class 0 with class 2
# close behind. Votes: 3 for class 1. Mean probabilities: class 0. Mean logits: class 2.
WEAK, STRONG = [0.0, 0.5, 0.45], [8.0, -10.0, 7.5]
FRAMES = torch.tensor([[WEAK, WEAK, WEAK, STRONG, STRONG]])


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_three_rules_on_a_known_example():
    vote = aggregate_frames(FRAMES, how="vote")[0]
    mean_probs = aggregate_frames(FRAMES, how="mean_probs")[0]
    mean_logits = aggregate_frames(FRAMES, how="mean_logits")[0]
    assert [int(vote.argmax()), int(mean_probs.argmax()), int(mean_logits.argmax())] == [1, 0, 2]
    assert torch.allclose(vote, torch.tensor([0.4, 0.6, 0.0]), atol=1e-3)  # vote shares
    expected = [(3 * w + 2 * s) / 5 for w, s in zip(softmax(WEAK), softmax(STRONG))]
    assert torch.allclose(mean_probs, torch.tensor(expected), atol=1e-6)
    mean = [(3 * w + 2 * s) / 5 for w, s in zip(WEAK, STRONG)]  # [3.2, -3.7, 3.27]
    assert torch.allclose(mean_logits, torch.tensor(softmax(mean)), atol=1e-6)
    for probs in (vote, mean_probs, mean_logits):
        assert abs(float(probs.sum()) - 1) < 1e-6


def test_padding_is_ignored_and_ties_go_to_the_more_probable_class():
    padded = torch.cat([FRAMES, torch.tensor([[[0.0, 0.0, 99.0]]])], dim=1)
    mask = torch.tensor([[True] * 5 + [False]])
    for how in ("vote", "mean_probs", "mean_logits"):
        assert torch.allclose(aggregate_frames(padded, mask, how), aggregate_frames(FRAMES, None, how))
    # One vote each for class 0 and class 1; class 0's frame is far more confident.
    tie = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert int(aggregate_frames(tie, how="vote").argmax()) == 0
    assert int(aggregate_frames(tie.flip(1), how="vote").argmax()) == 0  # frame order does not matter
    assert int(aggregate_frames(tie.flip(2), how="vote").argmax()) == 2  # the winner follows its class
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        aggregate_frames(tie, how="median")
    with pytest.raises(ValueError, match="no frames"):
        aggregate_frames(tie, torch.zeros(1, 2, dtype=torch.bool))


def test_aggregate_rows_of_a_frame_table():
    a, b = FRAMES[0].numpy(), np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 4.0]])
    table = np.stack([a[0], b[0], a[1], a[2], b[1], a[3], a[4]])  # video a's frames interleaved with b's
    videos, probs = aggregate_by_video(table, ["a", "b", "a", "a", "b", "a", "a"], "mean_probs")
    assert videos == ["a", "b"]
    assert np.allclose(probs[0], aggregate_frames(FRAMES, how="mean_probs")[0].numpy(), atol=1e-6)
    assert probs[1].argmax() == 2


# --- the frame-level base ------------------------------------------------------------------------

def test_frame_level_loss_and_prediction():
    tasks = CExprDB().tasks
    model = AUFrameMLP(tasks, {"au": 35}, aggregate="mean_logits")
    frames = torch.randn(2, 4, 35)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    batch = {"inputs": {"au": frames}, "masks": {"au": mask}, "targets": {"expression": torch.tensor([3, 5])},
             "clip_id": ["a", "b"]}
    model.eval()
    logits = model(batch)["expression"]
    expected = torch.nn.functional.cross_entropy(logits[mask], torch.tensor([3, 3, 3, 5, 5]))
    loss = model.frame_loss(model(batch), mask, batch["targets"])
    assert torch.allclose(loss, expected)
    probs = model.predict_step(batch)["expression"]
    assert torch.allclose(probs, aggregate_frames(logits, mask, "mean_logits"))
    with pytest.raises(ValueError, match="unknown aggregation"):
        AUFrameMLP(tasks, {"au": 35}, aggregate="max")


@pytest.mark.slow
def test_bench_frame_level_on_the_val_equals_test_split(cexprdb_root, tmp_path):
    out = tmp_path / "run"
    results = run_bench(BenchConfig(corpus="cexprdb", data_root=str(cexprdb_root), methods=["au-frame-mlp"], folds=["split3"],
                                    out=str(out), loggers=["csv"],
                                    hparams={"au-frame-mlp": {"max_epochs": 25, "patience": 25, "aggregate": "vote"}}))
    job = json.loads((out / "jobs/au-frame-mlp/split3-seed0/job.json").read_text())
    assert job["fold_info"]["val_equals_test"] is True and job["n_test"] == 4
    preds = pd.read_parquet(out / "predictions.parquet")
    test = preds[preds["split"] == "test"]
    assert sorted(test["clip_id"]) == sorted(CExprDB(cexprdb_root).plan(CExprDB(cexprdb_root).manifest())[2].test)
    assert np.allclose([p.sum() for p in test["probs"]], 1, atol=1e-5)  # one video-level posterior each
    train_acc = results[(results["split"] == "train") & (results["metric"] == "accuracy")]["value"].item()
    assert train_acc > 0.5, results  # 7 classes: chance is 1/7
    assert set(results["metric"]) >= {"macro_f1", "accuracy", "weighted_f1"}
