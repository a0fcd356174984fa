"""Helpers over a manifest (one row per clip) that corpora, features and the data module share.

A manifest is plain data (a DataFrame), so reading it needs no corpus: features may use these
helpers without importing ``mmer_bench.corpora``.
"""

from __future__ import annotations

import pandas as pd


def dialogues_of(manifest: pd.DataFrame, clip_ids: list[str],
                 columns: tuple[str, str] = ("dialogue", "utterance")) -> list[list[str]]:
    """``clip_ids`` grouped by dialogue, each in utterance order (dialogues in first-seen order)."""
    dialogue_col, order_col = columns
    info = manifest.set_index("clip_id")
    groups: dict[object, list[str]] = {}
    for clip in clip_ids:
        groups.setdefault(info.at[clip, dialogue_col], []).append(clip)
    return [sorted(g, key=lambda clip: info.at[clip, order_col]) for g in groups.values()]

