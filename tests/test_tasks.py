"""Task kinds and the CMU-MOSEI metrics, each on a small example computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mmer_bench import tasks as T


def test_weighted_accuracy_by_hand():
    # P = 2, N = 4, TP = 1, TN = 3: wA = (1 * 4 / 2 + 3) / 8 = 5 / 8
    target = [1, 1, 0, 0, 0, 0]
    pred = [1, 0, 0, 0, 0, 1]
    assert T.weighted_accuracy(pred, target) == pytest.approx(5 / 8)
    assert math.isnan(T.weighted_accuracy([1, 0], [1, 1]))  # no negatives: undefined
    # F1 of the same: precision 1/2, recall 1/2
    assert T.binary_f1(pred, target) == pytest.approx(0.5)


def test_intensity_scores_by_hand():
    names = ("happy", "sad")
    target = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 0.33]])
    outputs = np.array([[0.5, 1.0], [2.0, 0.0], [0.0, 0.2], [0.0, 0.33]])
    s = T.intensity_scores(outputs, target, names)
    assert s["mae_happy"] == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    assert s["mae_sad"] == pytest.approx(0.2 / 4)
    assert s["mae"] == pytest.approx((1.5 / 4 + 0.2 / 4) / 2)
    # happy present: truth [0,1,0,1], pred [1,1,0,0]: P=2 N=2 TP=1 TN=1 -> wA = (1 + 1) / 4; F1 = 0.5
    assert s["wa_happy"] == pytest.approx(0.5)
    assert s["f1_happy"] == pytest.approx(0.5)
    # sad present: truth [1,0,0,1], pred [1,0,1,1]: P=2 N=2 TP=2 TN=1 -> wA = (2 + 1) / 4; F1 = 2*2/(2*2+1) = 0.8
    assert s["wa_sad"] == pytest.approx(0.75)
    assert s["f1_sad"] == pytest.approx(0.8)
    assert s["wa"] == pytest.approx(0.625) and s["f1"] == pytest.approx(0.65)


def test_snap_presence_and_multilabel_confusion():
    assert T.snap([0.07, 0.2, 0.6, 1.2, 2.9, 3.4]).tolist() == [0.0, 0.16, 0.66, 1.33, 3.0, 3.0]
    assert T.snap([0.4, 1.6, 2.5], T.INTEGER_GRID).tolist() == [0.0, 2.0, 2.0]
    assert T.presence([0.0, 0.16, 1.0], threshold=0.5).tolist() == [False, False, True]
    target = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    outputs = np.array([[0.5, 1.0], [2.0, 0.0], [0.0, 0.2]])
    m = T.multilabel_confusion(outputs, target)
    assert m[0].tolist() == [[1, 1], [0, 1]]  # happy: TN=1 FP=1 FN=0 TP=1
    assert m[1].tolist() == [[1, 1], [0, 1]]  # sad: TN=1 FP=1 FN=0 TP=1


def test_dominant_emotion_by_hand():
    names = ("happy", "sad")
    target = np.array([[2.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    assert T.dominant(target).astype(int).tolist() == [[1, 0, 0], [0, 0, 1], [1, 1, 0], [0, 1, 0]]
    outputs = np.array([[1.5, 0.2], [0.0, 0.0], [0.1, 0.9], [2.0, 1.0]])
    s = T.dominant_scores(outputs, target, names)
    # predictions happy, neutral, sad (one of the tied pair: right), happy (wrong) -> 3/4
    assert s["accuracy"] == pytest.approx(0.75)
    # single-label truth (first of ties): happy, neutral, happy, sad; pred happy, neutral, sad, happy
    # happy: TP 1 FP 1 FN 1 -> 0.5; sad: TP 0 -> 0; neutral: 1
    assert s["f1_happy"] == pytest.approx(0.5) and s["f1_sad"] == 0 and s["f1_neutral"] == 1
    assert s["macro_f1"] == pytest.approx(0.5)
    assert s["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 0 + 1 * 1) / 4)
    # neutral scores -max: [-1.5, 0, -0.9, -2]; only clip 2 is neutral and ranks first -> AUC 1
    assert s["auc_neutral"] == pytest.approx(1.0)
    # happy scores [1.5, 0, .1, 2], positives clips 1 and 3: pairs (1.5>0, 1.5>2 no, .1>0, .1>2 no) -> 2/4
    assert s["auc_happy"] == pytest.approx(0.5)


def test_sentiment_scores_by_hand():
    target = np.array([-2.0, 0.0, 1.0, 2.6, -0.4])
    outputs = np.array([-1.0, 0.3, -0.2, 3.4, 0.0])
    s = T.sentiment_scores(outputs, target)
    # non-negative: truth [F,T,T,T,F] pred [F,T,F,T,T] -> 3/5
    assert s["acc2"] == pytest.approx(0.6)
    # without the 0 label: truth positive [F,T,T,F], pred > 0 [F,F,T,F] -> 3/4
    assert s["acc2_nonzero"] == pytest.approx(0.75)
    # classes: truth [-2,0,1,3,0] pred [-1,0,0,3,0] -> 3/5
    assert s["acc7"] == pytest.approx(0.6)
    assert s["mae"] == pytest.approx((1 + 0.3 + 1.2 + 0.8 + 0.4) / 5)
    assert s["corr"] == pytest.approx(np.corrcoef(outputs, target)[0, 1])


def test_task_interface():
    emotions, sentiment = T.IntensityTask(), T.SentimentTask()
    assert emotions.num_outputs == 6 and sentiment.num_outputs == 1
    assert emotions.metric_mode("mae") == "min" and sentiment.metric_mode("acc2") == "max"
    assert T.ClassificationTask("e", ("a", "b")).metric_mode("accuracy") == "max"
    out = torch.tensor([[-1.0, 4.0, 1.0, 0.0, 0.0, 0.0]])
    assert emotions.postprocess(out).tolist() == [[0.0, 3.0, 1.0, 0.0, 0.0, 0.0]]
    assert sentiment.postprocess(torch.tensor([[-5.0]])).item() == -3.0
    assert emotions.loss(torch.ones(2, 6), torch.zeros(2, 6)).item() == pytest.approx(1.0)
    metric = sentiment.metric_collection()
    assert float(metric(torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [0.0]]))["mae"]) == pytest.approx(0.5)
    frame = pd.DataFrame({"sentiment": [0.0, 3.5, np.nan]})
    assert sentiment.invalid(frame).tolist() == [False, True, True]
    assert sentiment.target_of([1.5]).dtype == np.float32


def test_acc5_and_the_nonzero_weighted_f1_by_hand():
    target = np.array([-3.0, -2.4, 0.0, 0.6, 1.5, 2.5, -0.8, 3.0])
    outputs = np.array([-2.2, -1.6, 0.4, 0.4, 2.7, 2.4, 0.5, -0.1])
    s = T.sentiment_scores(outputs, target)
    # Acc7, clipped to [-3, 3] and rounded half to even: truth [-3,-2,0,1,2,2,-1,3],
    # pred [-2,-2,0,0,3,2,0,0] -> 3/8
    assert s["acc7"] == pytest.approx(3 / 8)
    # Acc5, clipped to [-2, 2] first: truth [-2,-2,0,1,2,2,-1,2], pred [-2,-2,0,0,2,2,0,0] -> 5/8
    assert s["acc5"] == pytest.approx(5 / 8)
    # Without the 0 label (7 clips): truth positive [F,F,T,T,T,F,T], pred > 0 [F,F,T,T,T,T,F]
    assert s["acc2_nonzero"] == pytest.approx(5 / 7)
    # positive: 4 true, 4 predicted, 3 hits -> F1 3/4; negative: 3, 3, 2 hits -> 2/3;
    # weighted by the true counts: (4 * 3/4 + 3 * 2/3) / 7
    assert s["f1_nonzero"] == pytest.approx((4 * 0.75 + 3 * 2 / 3) / 7)


def test_leaderboard_header_defines_each_f1_shown():
    import pandas as pd

    from mmer_bench.corpora.mosei import Mosei
    from mmer_bench.report import leaderboard_markdown

    rows = [{"method": "m", "fold": "test", "seed": 0, "split": "test", "task": task, "metric": metric,
             "value": 0.5, "n_params": 1, "train_time_s": 1.0, "n_skipped": 0}
            for task, metrics in (("emotions", ("mae", "wa", "f1")), ("sentiment", T.SentimentTask().report_metrics))
            for metric in metrics]
    text = leaderboard_markdown(pd.DataFrame(rows), Mosei(), {})
    header = text.split("\n## ")[0]
    assert 'Mean F1: per emotion, the binary F1 of "present"' in header
    assert "F1 (non-0): weighted F1 of negative (< 0) vs positive (> 0)" in header
    assert "Acc5 (%)" in text and "F1 (non-0) (%)" in text
