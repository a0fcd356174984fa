"""The real RAVDESS speech clips and AU means in ../shared/data."""

import pytest

from mmer_bench.corpora.ravdess import Ravdess
from mmer_bench.runner import BenchConfig, run_bench

pytestmark = pytest.mark.shared_data


def test_real_manifest(shared_data):
    corpus = Ravdess(shared_data)
    manifest = corpus.manifest()
    assert len(manifest) == 1440 and manifest["subject"].nunique() == 24
    assert manifest["audio_path"].notna().all() and manifest["video_path"].isna().all()
    assert manifest["emotion"].value_counts().sort_index().tolist() == [96] + [192] * 7
    assert {"au-means", "egemaps", "logmel"} <= corpus.available_features(manifest)
    assert [len(f.test) for f in corpus.plan(manifest)] == [300, 300, 300, 300, 240]


@pytest.mark.slow
def test_au_mlp_on_real_au_means_reaches_fifty_percent(shared_data, tmp_path):
    results = run_bench(BenchConfig(corpus="ravdess", data_root=str(shared_data), methods=["luna2022-au-mlp"],
                                    out=str(tmp_path), loggers=["csv"]))
    accuracy = results.query("split == 'test' and metric == 'accuracy'")
    assert len(accuracy) == 5
    assert accuracy["value"].mean() >= 0.50, accuracy["value"].tolist()  # paper: 60.22, chance: 12.5
