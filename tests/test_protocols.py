import pandas as pd
import pytest

from mmer_bench.protocols import Fold, LeakageError, check_disjoint, official_split, subject_kfold


def manifest(subjects=6, clips=4):
    return pd.DataFrame(
        [{"clip_id": f"s{s}-c{c}", "subject": s, "split": ["train", "val", "test"][s % 3]}
         for s in range(subjects) for c in range(clips)]
    )


def test_subject_kfold_keeps_subjects_apart():
    m = manifest()
    folds = subject_kfold(m, [[0, 1], [2, 3], [4, 5]], val_fraction=0.25)
    check_disjoint(m, folds)
    for fold, test_subjects in zip(folds, [[0, 1], [2, 3], [4, 5]]):
        assert fold.info["test_subjects"] == test_subjects
        assert len(fold.info["val_subjects"]) == 1
        assert not set(fold.info["val_subjects"]) & set(test_subjects)


def test_leaking_plan_is_rejected():
    m = manifest()
    ids = list(m["clip_id"])
    # s0-c0..c3 belong to subject 0: put two of its clips in train and two in test.
    leaking = Fold("bad", tuple(ids[:2] + ids[8:16]), tuple(ids[16:20]), tuple(ids[2:4] + ids[20:24]))
    with pytest.raises(LeakageError, match="subject"):
        check_disjoint(m, [leaking])


def test_clip_in_two_parts_is_rejected():
    m = manifest()
    ids = tuple(m["clip_id"])
    with pytest.raises(LeakageError, match="clip"):
        check_disjoint(m, [Fold("bad", ids[:8], ids[8:12], ids[4:8])], group_columns=())


def test_fold_table_errors():
    m = manifest()
    with pytest.raises(LeakageError, match="twice"):
        subject_kfold(m, [[0, 1], [1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match="in no fold"):
        subject_kfold(m, [[0, 1], [2, 3]])


def test_official_split():
    m = manifest()
    (fold,) = official_split(m)
    assert len(fold.train) == len(fold.val) == len(fold.test) == 8


def test_inner_folds_cover_the_outer_training_clips_once_and_never_its_test():
    from mmer_bench.protocols import Fold, inner_folds

    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(120)], "subject": [i // 10 for i in range(120)]})
    outer = Fold("fold0", tuple(manifest.clip_id[20:100]), tuple(manifest.clip_id[100:]), tuple(manifest.clip_id[:20]))
    inner = inner_folds(manifest, outer, 4, seed=3)
    assert [f.name for f in inner] == [f"fold0-inner{j}" for j in range(4)]
    tested = [c for f in inner for c in f.test]
    assert sorted(tested) == sorted(outer.train + outer.val)  # out-of-fold: each training clip once
    for f in inner:
        assert not set(f.train + f.val + f.test) & set(outer.test)
        subjects = {part: set(manifest.set_index("clip_id").loc[list(ids), "subject"]) for part, ids in f.parts().items()}
        assert not (subjects["train"] & subjects["test"]) and not (subjects["val"] & subjects["test"])
        assert len(subjects["val"]) >= 1 and len(subjects["train"]) >= 4
    with pytest.raises(ValueError, match="cannot make 10 inner folds"):
        inner_folds(manifest, outer, 10)
