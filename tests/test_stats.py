"""The statistics of the leaderboard against hand computations from their formulas and against the
reference libraries (baycomp, scipy, sklearn)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from mmer_bench import stats
from mmer_bench.tasks import ClassificationTask

RNG = np.random.default_rng(7)


def test_corrected_t_interval_matches_the_formula_by_hand():
    values = np.array([0.61, 0.55, 0.66, 0.58, 0.63, 0.60, 0.57, 0.64, 0.59, 0.62])
    ratio = 0.25
    mean, low, high = stats.corrected_t_interval(values, ratio)
    n = len(values)
    s2 = sum((v - values.mean()) ** 2 for v in values) / (n - 1)
    half = sps.t.ppf(0.975, n - 1) * math.sqrt((1 / n + ratio) * s2)
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half))
    # wider than the naive t-interval, which ignores the overlap of training sets
    naive = sps.t.ppf(0.975, n - 1) * math.sqrt(s2 / n)
    assert high - low > 2 * naive


def test_corrected_t_matches_baycomp_correlated_t_test():
    baycomp = pytest.importorskip("baycomp")
    folds, runs = 5, 3
    x = RNG.normal(0.6, 0.04, folds * runs)
    y = x + RNG.normal(0.02, 0.03, folds * runs)
    ratio = 1 / (folds - 1)  # k-fold: n_test / n_train
    mean, var, df = baycomp.CorrelatedTTest.compute_statistics(x, y, runs)
    assert df == folds * runs - 1
    diff = y - x
    assert stats.corrected_variance(diff, ratio) == pytest.approx(var)
    # the frequentist one-sided p equals baycomp's posterior mass on "y is not better"
    t, p = stats.corrected_paired_t_test(y, x, ratio)
    assert t == pytest.approx(mean / math.sqrt(var))
    p_left, p_right = baycomp.CorrelatedTTest.probs(x, y, rope=0, runs=runs)
    assert p == pytest.approx(p_left, abs=1e-9)
    # and the interval of one row is that of its scores against zeros
    m, v, _ = baycomp.CorrelatedTTest.compute_statistics(np.zeros_like(y), y, runs)
    _, low, high = stats.corrected_t_interval(y, ratio)
    assert (low, high) == pytest.approx((m - sps.t.ppf(0.975, df) * math.sqrt(v), m + sps.t.ppf(0.975, df) * math.sqrt(v)))


def test_paired_t_identical_rows_are_not_different():
    x = np.array([0.5, 0.6, 0.7])
    assert stats.corrected_paired_t_test(x, x, 0.25)[1] == 1.0
    assert stats.corrected_paired_t_test(x + 0.1, x, 0.25)[1] == 0.0


def test_test_train_ratio_from_fold_sizes():
    jobs = pd.DataFrame({"n_train": [800, 780], "n_val": [160, 180], "n_test": [240, 240]})
    assert stats.test_train_ratio(jobs) == pytest.approx(0.25)


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])


def test_friedman_matches_the_formula_and_scipy():
    blocks = pd.DataFrame(RNG.random((12, 4)), columns=list("abcd"))
    statistic, p = stats.friedman(blocks)
    n, k = blocks.shape
    ranks = blocks.rank(axis=1).sum()
    by_hand = 12 / (n * k * (k + 1)) * (ranks ** 2).sum() - 3 * n * (k + 1)
    assert statistic == pytest.approx(by_hand)
    assert p == pytest.approx(sps.chi2.sf(by_hand, k - 1))
    assert (statistic, p) == pytest.approx(sps.friedmanchisquare(*[blocks[c] for c in blocks]))


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demšar 2006, Table 5(a): q_0.05 = 2.569 for 4 classifiers; CD = q sqrt(k(k+1)/6N)
    assert stats.nemenyi_cd(4, 14) == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), rel=1e-3)


def test_average_ranks_best_first():
    blocks = pd.DataFrame({"good": [0.9, 0.8, 0.85], "bad": [0.1, 0.2, 0.3], "mid": [0.5, 0.9, 0.4]})
    ranks = stats.average_ranks(blocks)
    assert list(ranks.index) == ["good", "mid", "bad"]
    assert ranks["bad"] == 3.0


def test_confusion_metrics_match_torchmetrics_scores():
    task = ClassificationTask("emotion", tuple("abcde"))
    target = RNG.integers(0, 5, 300)
    probs = RNG.dirichlet(np.ones(5), 300)
    probs[np.arange(300), target] += 0.3 * RNG.random(300)
    pred = probs.argmax(1)
    confusion = skm.confusion_matrix(target, pred, labels=range(5))
    ours = stats.confusion_metrics(confusion)
    reference = task.scores(probs / probs.sum(1, keepdims=True), target)
    for metric in ("accuracy", "uar", "macro_f1", "weighted_f1"):
        assert float(ours[metric]) == pytest.approx(reference[metric], abs=1e-6), metric


def test_cluster_bootstrap_widens_with_correlated_clusters():
    # 100 clusters of 10 clips, each cluster right or wrong as a whole: the effective sample is
    # 100, not 1,000, and the cluster bootstrap says so where a clip bootstrap would not.
    n_clusters, size = 100, 10
    right = RNG.random(n_clusters) < 0.7
    clusters = np.repeat(np.arange(n_clusters), size)
    target = np.zeros(n_clusters * size, dtype=int)
    pred = np.where(np.repeat(right, size), 0, 1)
    by_cluster = stats.cluster_confusions(target, pred, clusters, list(range(n_clusters)), 2)[None]
    by_clip = stats.cluster_confusions(target, pred, np.arange(len(target)), list(range(len(target))), 2)[None]
    wide = stats.percentile_interval(stats.Bootstrap(list(range(n_clusters)), 1, 2000).replicate(by_cluster, "accuracy"))
    narrow = stats.percentile_interval(stats.Bootstrap(list(range(len(target))), 1, 2000).replicate(by_clip, "accuracy"))
    p = right.mean()
    assert wide[0] < p < wide[1] and narrow[0] < p < narrow[1]
    # about sqrt(10) wider; the binomial standard error of 100 clusters gives the width
    assert (wide[1] - wide[0]) > 2.5 * (narrow[1] - narrow[0])
    assert (wide[1] - wide[0]) == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / n_clusters), rel=0.2)


def test_paired_bootstrap_p():
    best = RNG.normal(0.7, 0.01, 999)
    assert stats.paired_bootstrap_p(best, best - 0.05) == pytest.approx(1 / 1000)
    assert stats.paired_bootstrap_p(best, best) == 1.0
    assert stats.paired_bootstrap_p(best, best + 0.05, higher_is_better=False) == pytest.approx(1 / 1000)


def test_calibration_of_known_posteriors():
    target = np.array([0, 1, 2, 3] * 25)
    perfect = np.eye(4)[target]
    scores = stats.calibration(perfect, target)
    assert scores["ece"] == pytest.approx(0, abs=1e-6) and scores["brier"] == pytest.approx(0, abs=1e-9)
    assert scores["nll"] < 1e-6
    uniform = np.full((100, 4), 0.25)
    scores = stats.calibration(uniform, target)
    assert scores["brier"] == pytest.approx(0.75)  # sum over classes: 0.75^2 + 3 x 0.25^2
    assert scores["nll"] == pytest.approx(math.log(4))
    # argmax of a uniform row is class 0: 25% right at confidence 0.25
    assert scores["ece"] == pytest.approx(0.0, abs=1e-6)
    overconfident = np.full((100, 4), 0.02)
    overconfident[:, 0] = 0.94  # says class 0 at 94%, right 25% of the time
    assert stats.calibration(overconfident, target)["ece"] == pytest.approx(0.94 - 0.25, abs=1e-5)
    confidence, accuracy, count = stats.reliability(overconfident, target)
    assert confidence == pytest.approx([0.94]) and accuracy == pytest.approx([0.25]) and count.tolist() == [100]


def _results(scores: dict[str, list[float]], folds: int, seeds: int, n_test=60, n_train=200, n_val=40):
    rows = []
    for method, values in scores.items():
        for i, v in enumerate(values):
            for metric in ("accuracy", "uar"):
                rows.append({"corpus": "x", "method": method, "fold": f"fold{i % folds}", "seed": i // folds,
                             "split": "test", "task": "emotion", "metric": metric, "value": v,
                             "n_train": n_train, "n_val": n_val, "n_test": n_test})
    return pd.DataFrame(rows)


def test_kfold_table_verdicts():
    task = ClassificationTask("emotion", ("a", "b"))
    base = RNG.normal(0.7, 0.03, 15)
    results = _results({"best": list(base + 0.05), "same": list(base + 0.05 - RNG.normal(0, 0.002, 15)),
                        "worse": list(base - 0.2), "mid": list(base)}, folds=5, seeds=3)
    v = stats.task_verdicts(results, None, task, ("accuracy", "uar"), "accuracy")
    assert v.kind == stats.KFOLD and "0.250" in v.description  # 60 / (200 + 40)
    assert v.best == "best"
    assert v.rows.loc["same", "tied"] and not v.rows.loc["worse", "tied"] and not v.rows.loc["best", "tied"]
    _, low, high = stats.corrected_t_interval(base - 0.2, 0.25)
    assert (v.rows.loc["worse", "accuracy_low"], v.rows.loc["worse", "accuracy_high"]) == pytest.approx((low, high))
    assert v.friedman is not None and v.friedman[1] < 0.05
    assert list(v.ranks.index[-1:]) == ["worse"] and v.cd > 0
    assert v.blocks.shape == (15, 4)


def _predictions(method, seed, target, pred, clip_ids, n_classes):
    probs = np.full((len(target), n_classes), 0.1 / (n_classes - 1))
    probs[np.arange(len(target)), pred] = 0.9
    return pd.DataFrame({"corpus": "x", "method": method, "fold": "official", "seed": seed, "split": "test",
                         "task": "emotion", "clip_id": clip_ids, "target": target, "pred": pred, "probs": list(probs)})


def test_official_split_table_verdicts():
    task = ClassificationTask("emotion", ("a", "b", "c"))
    n = 600
    clip_ids = [f"c{i}" for i in range(n)]
    clusters = pd.Series([f"dialogue{i // 6}" for i in range(n)], index=clip_ids)
    target = RNG.integers(0, 3, n)
    preds, rows = [], []
    for method, accuracy in (("best", 0.8), ("close", 0.795), ("poor", 0.5)):
        for seed in range(3):
            pred = np.where(RNG.random(n) < accuracy, target, (target + 1) % 3)
            preds.append(_predictions(method, seed, target, pred, clip_ids, 3))
            rows.append({"method": method, "fold": "official", "seed": seed, "split": "test", "task": "emotion",
                         "metric": "accuracy", "value": float((pred == target).mean()),
                         "n_train": 1000, "n_val": 100, "n_test": n})
    results, predictions = pd.DataFrame(rows), pd.concat(preds, ignore_index=True)
    v = stats.task_verdicts(results, predictions, task, ("accuracy",), "accuracy", clusters=clusters,
                            cluster_unit="dialogue", resamples=500)
    assert v.kind == stats.BOOTSTRAP and "dialogue" in v.description
    row = v.rows.loc["poor"]
    assert row["accuracy_low"] < row["accuracy"] < row["accuracy_high"] < v.rows.loc["best", "accuracy_low"]
    assert not row["tied"] and row["p_holm"] < 0.01
    # calibration: every prediction at 0.9 confidence
    acc = v.rows.loc["poor", "accuracy"]
    assert v.rows.loc["poor", "ece"] == pytest.approx(abs(0.9 - acc), abs=1e-4)
    with pytest.raises(ValueError, match="have no dialogue"):
        stats.task_verdicts(results, predictions, task, ("accuracy",), "accuracy", clusters=clusters.iloc[:10],
                            cluster_unit="dialogue", resamples=10)
