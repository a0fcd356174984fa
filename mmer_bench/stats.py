"""Verdicts drawn from the runs: intervals that respect the protocol, paired tests against the
best row, the Friedman test with its critical-difference diagram, and calibration.

Two protocol families, two kinds of interval (``interval_kind``):

- **k-fold cross-validation** (several folds): the training sets of the folds overlap, so the
  scores of the fold x seed runs are correlated and the plain t-interval is too narrow. The
  interval uses Nadeau & Bengio's corrected resampled variance, (1/J + n_test/n_train) s^2 over
  the J runs (Nadeau & Bengio 2003, "Inference for the generalization error", Machine Learning
  52:239-281), as in baycomp's correlated t-test (Corani & Benavoli 2015; Benavoli et al. 2017,
  JMLR 18:77); the ratio comes from the fold sizes recorded in results.parquet. The paired test
  of a row against the best row uses the same statistic on their per-run differences, paired on
  the same (fold, seed) runs.
- **official split** (one fold, several seeds): one test set, so the uncertainty is that of the
  test sample plus that of training. A two-level bootstrap resamples the test clusters
  (dialogues, videos or speakers: the corpus's leakage unit, since clips of one cluster are not
  independent; Field & Welsh 2007, JRSS-B 69:369) and the seeds together (Bouthillier et al. 2021,
  "Accounting for variance in machine learning benchmarks", MLSys). The paired version applies the
  same resamples to the best row and the row (Koehn 2004, "Statistical significance tests for
  machine translation evaluation", EMNLP), so they are compared on the same test clips.

Each row is tested one-sided (is it worse than the best?), the p-values of a table are Holm-
corrected (statsmodels), and a row whose corrected p-value is at least 0.05 is *tied* with the best.
Across the methods of a corpus, the Friedman test (scipy) over the (fold, seed) blocks, the
Nemenyi post-hoc test and the critical-difference diagram (scikit-posthocs; Demšar 2006, JMLR
7:1-30) rank them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

ALPHA = 0.05
LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
CALIBRATION_BINS = 15

KFOLD = "corrected-t"
BOOTSTRAP = "cluster-bootstrap"
SEED_T = "t"
INTERVAL_TEXT = {
    KFOLD: "95% interval: Nadeau-Bengio corrected resampled t over folds x seeds (test/train ratio {ratio:.3f}); "
           "ties: corrected resampled paired t-test vs the best row on the same (fold, seed) runs",
    BOOTSTRAP: "95% interval: cluster bootstrap over test {unit}s x seeds ({resamples} resamples); "
               "ties: paired cluster bootstrap vs the best row on the same test clips",
    SEED_T: "95% interval: t-interval over seeds (no clusters to resample); ties: paired t-test over seeds",
}


# --- k-fold: Nadeau-Bengio corrected resampled t ---------------------------------------------------

def corrected_variance(values: np.ndarray, test_train_ratio: float) -> float:
    """Nadeau-Bengio corrected variance of the mean of J resampled scores:
    (1/J + n_test/n_train) x sample variance."""
    values = np.asarray(values, dtype=float)
    return float((1 / len(values) + test_train_ratio) * values.var(ddof=1))


def corrected_t_interval(values, test_train_ratio: float, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and the corrected resampled t-interval (low, high) of scores of J >= 2 runs."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(sps.t.ppf(0.5 + level / 2, len(values) - 1) * np.sqrt(corrected_variance(values, test_train_ratio)))
    return mean, mean - half, mean + half


def corrected_paired_t_test(best, other, test_train_ratio: float) -> tuple[float, float]:
    """One-sided corrected resampled paired t-test of H1 "``best`` scores higher than ``other``"
    on paired runs. Returns (t, p). Identical scores give p = 1."""
    diff = np.asarray(best, dtype=float) - np.asarray(other, dtype=float)
    if len(diff) < 2:
        return float("nan"), float("nan")
    mean = float(diff.mean())
    variance = corrected_variance(diff, test_train_ratio)
    if variance == 0:
        return (float("inf") if mean > 0 else 0.0), (0.0 if mean > 0 else 1.0)
    t = mean / np.sqrt(variance)
    return float(t), float(sps.t.sf(t, len(diff) - 1))


def test_train_ratio(jobs: pd.DataFrame) -> float:
    """n_test / n_train of the k-fold runs (mean over jobs): the data a fold's model was developed
    on is its training part plus its validation part (both drawn from the training subjects)."""
    train = jobs["n_train"].astype(float) + jobs.get("n_val", 0).astype(float)
    return float((jobs["n_test"].astype(float) / train).mean())


# --- official split: cluster x seed bootstrap -------------------------------------------------------

def confusion_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, UAR, macro-F1 and weighted-F1 of confusion matrices (..., C, C) (rows = target,
    columns = prediction), as torchmetrics computes them (a class absent from both target and
    prediction scores 0 in the macro averages)."""
    confusion = np.asarray(confusion, dtype=float)
    total = confusion.sum(axis=(-2, -1))
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    support = confusion.sum(axis=-1)
    predicted = confusion.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        weights = support / total[..., None]
        return {
            "accuracy": tp.sum(-1) / total,
            "uar": recall.mean(-1),
            "macro_f1": f1.mean(-1),
            "weighted_f1": (f1 * weights).sum(-1),
        }


def cluster_confusions(target, pred, clusters, cluster_ids, n_classes: int) -> np.ndarray:
    """(G, C, C) confusion counts of the clips of each cluster in ``cluster_ids``."""
    index = {c: i for i, c in enumerate(cluster_ids)}
    rows = np.array([index[c] for c in clusters], dtype=np.int64)
    out = np.zeros((len(cluster_ids), n_classes * n_classes))
    np.add.at(out, (rows, np.asarray(target, dtype=np.int64) * n_classes + np.asarray(pred, dtype=np.int64)), 1)
    return out.reshape(len(cluster_ids), n_classes, n_classes)


@dataclass
class Bootstrap:
    """Shared resamples: cluster counts (B, G) and seed picks (B, S) for every row of a table, so
    two rows are always compared on the same resampled test clips and seed positions."""

    clusters: list
    n_seeds: int
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = 0
    counts: np.ndarray = field(init=False)
    picks: np.ndarray = field(init=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        g = len(self.clusters)
        self.counts = rng.multinomial(g, np.full(g, 1 / g), size=self.resamples).astype(float)
        self.picks = rng.integers(0, self.n_seeds, size=(self.resamples, self.n_seeds))

    def replicate(self, confusions: np.ndarray, metric: str) -> np.ndarray:
        """Bootstrap distribution (B,) of the seed-mean ``metric``; ``confusions`` is (S, G, C, C)
        with S <= n_seeds runs (seed positions beyond S are folded back onto the runs)."""
        s = confusions.shape[0]
        flat = confusions.reshape(s, confusions.shape[1], -1)
        resampled = np.einsum("bg,sgk->bsk", self.counts, flat).reshape(self.resamples, s, *confusions.shape[2:])
        scores = confusion_metrics(resampled)[metric]  # (B, S)
        picks = self.picks[:, :s] % s
        return np.take_along_axis(scores, picks, axis=1).mean(axis=1)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    low, high = np.percentile(replicates, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_bootstrap_p(best: np.ndarray, other: np.ndarray, higher_is_better: bool = True) -> float:
    """One-sided p-value of "the best row beats the other": the share of paired resamples in which
    it does not (Koehn 2004), with the +1 correction so that p is never 0."""
    diff = (best - other) if higher_is_better else (other - best)
    return float((1 + np.sum(diff <= 0)) / (1 + len(diff)))


# --- multiple comparisons ---------------------------------------------------------------------------

def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels); NaN entries stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    pvalues = np.asarray(pvalues, dtype=float)
    out = np.full(len(pvalues), np.nan)
    valid = ~np.isnan(pvalues)
    if valid.any():
        out[valid] = multipletests(pvalues[valid], method="holm")[1]
    return out


def friedman(blocks: pd.DataFrame) -> tuple[float, float]:
    """Friedman test over the blocks (rows) x methods (columns) of complete scores (scipy)."""
    return tuple(float(v) for v in sps.friedmanchisquare(*[blocks[c].to_numpy() for c in blocks.columns]))


def average_ranks(blocks: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank of each method over the blocks (1 = best; ties share the mean rank)."""
    return blocks.rank(axis=1, ascending=not higher_is_better).mean().sort_values()


def nemenyi(blocks: pd.DataFrame) -> pd.DataFrame:
    """Nemenyi post-hoc p-values after the Friedman test (scikit-posthocs), methods x methods."""
    import scikit_posthocs as sp

    return sp.posthoc_nemenyi_friedman(blocks.to_numpy()).set_axis(blocks.columns, axis=0).set_axis(blocks.columns, axis=1)


def nemenyi_cd(n_methods: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """Critical difference of mean ranks (Demšar 2006): q_alpha sqrt(k(k+1) / 6N), with q_alpha the
    studentized range quantile over sqrt(2)."""
    q = sps.studentized_range.ppf(1 - alpha, n_methods, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(n_methods * (n_methods + 1) / (6 * n_blocks)))


# --- calibration ------------------------------------------------------------------------------------

def calibration(probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Top-label expected calibration error (15 equal-width bins, torchmetrics), multi-class Brier
    score (sum over classes of the squared error, sklearn) and negative log-likelihood (sklearn)."""
    import torch
    from sklearn.metrics import brier_score_loss, log_loss
    from torchmetrics.classification import MulticlassCalibrationError

    probs = np.asarray(probs, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    n_classes = probs.shape[1]
    probs = np.clip(probs, 0, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    labels = list(range(n_classes))
    ece = MulticlassCalibrationError(n_classes, n_bins=CALIBRATION_BINS, norm="l1")(
        torch.tensor(probs, dtype=torch.float32), torch.tensor(target))
    return {"ece": float(ece),
            "brier": float(brier_score_loss(target, probs, labels=labels, scale_by_half=False)),
            "nll": float(log_loss(target, probs, labels=labels))}


def reliability(probs: np.ndarray, target: np.ndarray, bins: int = CALIBRATION_BINS):
    """Top-label reliability curve: (mean confidence, accuracy, clip count) of each non-empty bin."""
    probs = np.asarray(probs, dtype=float)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(target)).astype(float)
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    keep = count > 0
    mean_conf = np.bincount(which, confidence, minlength=bins)[keep] / count[keep]
    accuracy = np.bincount(which, correct, minlength=bins)[keep] / count[keep]
    return mean_conf, accuracy, count[keep]


# --- a whole table ----------------------------------------------------------------------------------

@dataclass
class TaskVerdicts:
    """Per-row verdicts of one task's table."""

    kind: str  # KFOLD, BOOTSTRAP or SEED_T
    description: str  # for the table header
    primary: str
    best: str
    rows: pd.DataFrame  # index method: <metric>, <metric>_low, <metric>_high, p_vs_best, p_holm, tied, ece, brier, nll
    blocks: pd.DataFrame | None  # (fold, seed) blocks x methods of the primary metric (complete ones)
    friedman: tuple[float, float] | None = None  # (statistic, p)
    ranks: pd.Series | None = None
    posthoc: pd.DataFrame | None = None
    cd: float | None = None


def _run_key(frame: pd.DataFrame) -> pd.Series:
    return frame["fold"].astype(str) + "/seed" + frame["seed"].astype(str)


def _paired(scores: pd.DataFrame, metric: str, best: str, other: str, higher_is_better: bool):
    """The two rows' scores on the runs they share, ordered so that the first should be higher."""
    pair = scores[[(metric, best), (metric, other)]].dropna()
    a, b = pair.iloc[:, 0].to_numpy(), pair.iloc[:, 1].to_numpy()
    return (a, b) if higher_is_better else (b, a)


def task_verdicts(results: pd.DataFrame, predictions: pd.DataFrame | None, task, metrics, primary: str,
                  higher_is_better: bool = True, clusters: pd.Series | None = None, cluster_unit: str = "clip",
                  resamples: int = BOOTSTRAP_RESAMPLES, alpha: float = ALPHA) -> TaskVerdicts:
    """Intervals, paired tests vs the best row, Holm ties, Friedman / Nemenyi and calibration of one
    task's test scores. ``clusters`` maps clip_id -> cluster (dialogue, video, speaker) for the
    official-split bootstrap; without it every clip is its own cluster."""
    test = results[(results["split"] == "test") & (results["task"] == task.name)]
    if test.empty:
        raise ValueError(f"no test results for task {task.name!r}")
    jobs = test.drop_duplicates(["method", "fold", "seed"])
    scores = test.assign(run=_run_key(test)).pivot_table(index="run", columns=["metric", "method"], values="value")
    methods = sorted(test["method"].unique())
    means = {m: test[(test["method"] == m) & (test["metric"] == primary)]["value"].mean() for m in methods}
    best = (max if higher_is_better else min)(methods, key=lambda m: means[m])
    n_folds = test["fold"].nunique()
    rows = pd.DataFrame(index=pd.Index(methods, name="method"))
    test_preds = None
    if predictions is not None:
        test_preds = predictions[(predictions["split"] == "test") & (predictions["task"] == task.name)]

    if n_folds > 1:
        kind = KFOLD
        ratio = test_train_ratio(jobs)
        description = INTERVAL_TEXT[KFOLD].format(ratio=ratio)
        for metric in metrics:
            for m in methods:
                if (metric, m) not in scores:
                    continue
                values = scores[(metric, m)].dropna().to_numpy()
                rows.loc[m, [metric, f"{metric}_low", f"{metric}_high"]] = corrected_t_interval(values, ratio)
        for m in methods:
            if m == best:
                continue
            a, b = _paired(scores, primary, best, m, higher_is_better)
            rows.loc[m, "p_vs_best"] = corrected_paired_t_test(a, b, ratio)[1]
    elif task.kind == "classification" and test_preds is not None and len(test_preds):
        kind = BOOTSTRAP
        seeds = sorted(test["seed"].unique())
        clip_cluster = (clusters if clusters is not None
                        else pd.Series(test_preds["clip_id"].unique(), index=test_preds["clip_id"].unique()))
        missing = set(test_preds["clip_id"]) - set(clip_cluster.index)
        if missing:
            raise ValueError(f"{len(missing)} test clips have no {cluster_unit} to resample, e.g. {sorted(missing)[:3]}")
        cluster_ids = sorted(set(clip_cluster.loc[test_preds["clip_id"].unique()]))
        boot = Bootstrap(cluster_ids, len(seeds), resamples)
        description = INTERVAL_TEXT[BOOTSTRAP].format(unit=cluster_unit, resamples=resamples)
        n_classes = task.num_classes
        replicates: dict[str, dict[str, np.ndarray]] = {}
        for m in methods:
            mine = test_preds[test_preds["method"] == m]
            per_seed = [cluster_confusions(g["target"], g["pred"], clip_cluster.loc[g["clip_id"]].to_numpy(),
                                           cluster_ids, n_classes) for _, g in mine.groupby("seed", sort=True)]
            confusions = np.stack(per_seed)
            for metric in metrics:
                if (metric, m) not in scores:
                    continue
                reps = boot.replicate(confusions, metric)
                replicates.setdefault(m, {})[metric] = reps
                low, high = percentile_interval(reps)
                rows.loc[m, [metric, f"{metric}_low", f"{metric}_high"]] = (scores[(metric, m)].mean(), low, high)
        for m in methods:
            if m != best and primary in replicates.get(m, {}):
                rows.loc[m, "p_vs_best"] = paired_bootstrap_p(replicates[best][primary], replicates[m][primary],
                                                              higher_is_better)
    else:
        kind = SEED_T
        description = INTERVAL_TEXT[SEED_T]
        for metric in metrics:
            for m in methods:
                if (metric, m) in scores:
                    rows.loc[m, [metric, f"{metric}_low", f"{metric}_high"]] = corrected_t_interval(
                        scores[(metric, m)].dropna().to_numpy(), 0.0)
        for m in methods:
            if m != best:
                a, b = _paired(scores, primary, best, m, higher_is_better)
                rows.loc[m, "p_vs_best"] = corrected_paired_t_test(a, b, 0.0)[1]

    if "p_vs_best" not in rows:
        rows["p_vs_best"] = np.nan
    rows["p_holm"] = holm(rows["p_vs_best"].to_numpy())
    rows["tied"] = rows["p_holm"] >= alpha
    rows.loc[best, "tied"] = False

    if test_preds is not None and task.kind == "classification":
        for m in methods:
            per_run = [calibration(np.stack(g["probs"].to_numpy()), g["target"].to_numpy())
                       for _, g in test_preds[test_preds["method"] == m].groupby(["fold", "seed"])]
            if per_run:
                for key in ("ece", "brier", "nll"):
                    rows.loc[m, key] = float(np.mean([r[key] for r in per_run]))

    blocks = scores[primary].dropna(axis=0, how="any") if primary in scores.columns.get_level_values(0) else None
    verdict = TaskVerdicts(kind, description, primary, best, rows, blocks)
    if blocks is not None and blocks.shape[1] >= 3 and blocks.shape[0] >= 2:
        spread = blocks.nunique(axis=1) > 1
        if spread.any():  # scipy's Friedman is undefined when every block ties all methods
            verdict.friedman = friedman(blocks)
            verdict.ranks = average_ranks(blocks, higher_is_better)
            verdict.posthoc = nemenyi(blocks if higher_is_better else -blocks)
            verdict.cd = nemenyi_cd(blocks.shape[1], blocks.shape[0], alpha)
    return verdict
