"""Agreement of the extractors that reproduce a published pipeline with that pipeline, run by
the original's own tool, on real RAVDESS clips (../shared/data/ravdess).

    python benchmarks/fidelity.py [--clips 8]

Needs the ``parity`` extra (pyAudioAnalysis, librosa). Prints, per extractor:

- meld-audio34 against pyAudioAnalysis 0.3.14 ``ShortTermFeatures.feature_extraction``
  (0.2 s / 0.1 s, no deltas): per feature, the median over clips of the frame-by-frame Pearson r
  and the largest absolute difference over all frames;
- logmel-merc against MERC2020's ``preprocess_audio`` (librosa + scipy): median over clips of
  the Pearson r between the two images and of the median absolute difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmer_bench.features.audio import MELD_AUDIO34_NAMES, LogMelMERC, MeldAudio34, load_audio  # noqa: E402
from mmer_bench.features.originals import merc2020_log_mel, pyaudioanalysis_short_term  # noqa: E402

RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"


def clips(count: int) -> list[Path]:
    """``count`` clips spread over actors and emotions (every actor's files, in name order)."""
    files = sorted(RAVDESS.glob("Actor_*/*.flac"))
    if not files:
        raise SystemExit(f"no RAVDESS clips under {RAVDESS}")
    return files[:: max(1, len(files) // count)][:count]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0:  # a constant column: agreement means equality
        return 1.0 if np.allclose(a, b) else 0.0
    return float((a * b).sum() / denominator)


def meld_audio34(files: list[Path]) -> None:
    extractor = MeldAudio34()
    window = int(round(extractor.window_seconds * extractor.sample_rate))
    step = int(round(extractor.hop_seconds * extractor.sample_rate))
    r, worst = [], np.zeros(34)
    for path in files:
        ours = extractor.extract_clip(str(path))
        audio = load_audio(str(path), extractor.sample_rate)[: window + step * (extractor.max_frames - 1)]
        theirs = pyaudioanalysis_short_term(audio, extractor.sample_rate, extractor.window_seconds,
                                            extractor.hop_seconds)
        if ours.shape != theirs.shape:
            raise SystemExit(f"{path.name}: {ours.shape} frames here, {theirs.shape} in pyAudioAnalysis")
        r.append([pearson(ours[:, j], theirs[:, j]) for j in range(34)])
        worst = np.maximum(worst, np.abs(ours - theirs).max(axis=0))
    median_r = np.median(np.array(r), axis=0)
    print(f"meld-audio34 v{extractor.version} vs pyAudioAnalysis 0.3.14 on {len(files)} RAVDESS clips")
    print(f"  {'feature':18s} {'median r':>9s} {'max |diff|':>11s}")
    for name, value, diff in zip(MELD_AUDIO34_NAMES, median_r, worst):
        print(f"  {name:18s} {value:9.4f} {diff:11.3g}")
    print(f"  median r over clips: min {median_r.min():.4f}, max {median_r.max():.4f} over the 34 features")


def logmel_merc(files: list[Path]) -> None:
    extractor = LogMelMERC()
    r, mad, frames, worst = [], [], [], 0.0
    for path in files:
        ours = extractor.extract_clip(str(path))
        theirs = merc2020_log_mel(load_audio(str(path), extractor.sample_rate))
        frames.append((len(ours), len(theirs)))
        n = min(len(ours), len(theirs))
        r.append(pearson(ours[:n].ravel(), theirs[:n].ravel()))
        mad.append(float(np.median(np.abs(ours[:n] - theirs[:n]))))
        worst = max(worst, float(np.abs(ours[:n] - theirs[:n]).max()))
    same = sum(a == b for a, b in frames)
    print(f"logmel-merc v{extractor.version} vs MERC2020 preprocess_audio (librosa + scipy) on {len(files)} RAVDESS clips")
    print(f"  frame counts equal on {same} of {len(files)} clips")
    print(f"  Pearson r (image): median {np.median(r):.4f}, min {np.min(r):.4f}")
    print(f"  median |difference| on the [0, 1] scale: median {np.median(mad):.3g}, max {np.max(mad):.3g}; largest {worst:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    args = parser.parse_args()
    files = clips(args.clips)
    meld_audio34(files)
    logmel_merc(files)


if __name__ == "__main__":
    main()
