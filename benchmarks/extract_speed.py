"""Feature extraction speed: the plain per-file loop against ``extract`` and its cached re-read.

For eGeMAPS functionals and a 128-band log-mel it times, on the clips of a corpus:
  (a) the single-process loop other toolkits use: read a file with soundfile, call openSMILE's
      process_signal / compute the log-mel with numpy, next file;
  (b) our extractor through ``mmer_bench.features.base.extract`` with every core, into a fresh
      temporary feature store (process pool, per-clip error capture and the Parquet write included);
  (c) reading the same features back from that store (a second ``extract``, a cache hit).
Then the throughput of every other extractor, (b) only, on the same clips.

    python benchmarks/extract_speed.py --data-root ../shared/data --limit 200
    python benchmarks/extract_speed.py --data-root ../shared/data --compare logmel --repeat 5 --extractors none

``--limit N`` takes N clips drawn at random (seed 0) so their lengths are representative.
``--repeat N`` runs (a), (b) and (c) back to back N times and reports each run and the median of
the (a)/(b) ratios: on a machine that other jobs load, one run can be off by a factor of two.
No pretrained weights are needed: VGGish runs from random weights and wav2vec2, unless
``--wav2vec2-path`` names a local checkpoint, from a randomly initialised model of wav2vec2-base's
size (transformers' default config, saved to a temporary folder and loaded from it); the weights'
values do not change the speed. GloVe on RAVDESS reads the two statements' texts.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the table
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

from mmer_bench.features.audio import mel_filterbank  # noqa: E402
from mmer_bench.features.base import extract  # noqa: E402
from mmer_bench.features.store import FeatureStore  # noqa: E402
from mmer_bench.registry import CORPORA, EXTRACTORS  # noqa: E402

RATE = 16000
OTHERS = ["egemaps-lld", "compare", "compare-lld", "meld-audio34", "vggish", "wav2vec2", "glove"]
RAVDESS_STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}


def read_mono(path: str) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rate != RATE:
        g = np.gcd(rate, RATE)
        samples = resample_poly(samples, RATE // g, rate // g).astype(np.float32)
    return samples


def plain_logmel(samples: np.ndarray, n_mels: int = 128, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return np.log(power @ mel_filterbank(RATE, n_fft, n_mels, 0.0, 8000.0).T + 1e-6)


def loop_egemaps(paths: list[str]) -> None:
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    for path in paths:
        smile.process_signal(read_mono(path), RATE)


def loop_logmel(paths: list[str]) -> None:
    for path in paths:
        plain_logmel(read_mono(path))


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def through_store(extractor, manifest: pd.DataFrame, workers: int) -> tuple[float, float, int]:
    """Seconds to extract into a fresh store, seconds to read back the cached result, failures."""
    with tempfile.TemporaryDirectory(prefix="mmer-speed-") as tmp:
        store = FeatureStore(tmp)
        cold, features = timed(extract, extractor, manifest, "speed", store, workers)
        warm, _ = timed(extract, extractor, manifest, "speed", store, workers)
    return cold, warm, len(features.errors)


def rate_line(name: str, seconds: float, clips: int, audio_seconds: float | None, extra: str = "") -> str:
    audio = f"{audio_seconds / seconds:8.1f} audio s/s" if audio_seconds else f"{'(text)':>18s}"
    return f"  {name:34s} {seconds:8.2f} s  {clips / seconds:8.1f} clips/s  {audio}{extra}"


def load_manifest(corpus: str, data_root: str | None, limit: int | None) -> pd.DataFrame:
    manifest = CORPORA.get(corpus)(data_root).manifest()
    manifest = manifest[manifest["audio_path"].notna()]
    if limit and limit < len(manifest):
        manifest = manifest.sample(n=limit, random_state=0)
    manifest = manifest.reset_index(drop=True)
    if "text" not in manifest.columns and "statement" in manifest.columns:
        manifest["text"] = manifest["statement"].map(RAVDESS_STATEMENTS)
    return manifest


def random_wav2vec2_base(folder: str) -> str:
    """A wav2vec2-base-sized model with random weights, saved where from_pretrained can load it."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    return folder


def other_extractors(names: list[str], wav2vec2_path: str) -> list:
    options = {"wav2vec2": {"model_path": wav2vec2_path}}
    return [EXTRACTORS.get(n)(**options.get(n, {})) for n in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="ravdess")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--limit", type=int, default=None, help="time N randomly drawn clips (seed 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compare", default="egemaps,logmel",
                        help="side-by-side comparisons with the plain loop to run (egemaps, logmel)")
    parser.add_argument("--repeat", type=int, default=1, help="run each comparison N times back to back")
    parser.add_argument("--extractors", default=None,
                        help=f"comma-separated other extractors to time, or none (default: {','.join(OTHERS)})")
    parser.add_argument("--wav2vec2-path", default=None, help="a local wav2vec2 checkpoint folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # VGGish's untrained warning is expected here

    manifest = load_manifest(args.corpus, args.data_root, args.limit)
    paths = manifest["audio_path"].tolist()
    audio_seconds = sum(sf.info(p).duration for p in paths)
    n = len(paths)
    print(f"{args.corpus}: {n} clips, {audio_seconds:.0f} s of audio; {args.workers} workers "
          f"on {os.cpu_count()} cores")

    comparisons = {
        "egemaps": ("eGeMAPS functionals", loop_egemaps, EXTRACTORS.get("egemaps")()),
        "logmel": ("log-mel, 128 bands", loop_logmel, EXTRACTORS.get("logmel")(n_mels=128)),
    }
    for name in args.compare.split(",") if args.compare != "none" else []:
        label, loop, extractor = comparisons[name]
        print(f"{label}:")
        ratios, rereads = [], []
        for run in range(args.repeat):
            loop_seconds, _ = timed(loop, paths)
            cold, warm, failed = through_store(extractor, manifest, args.workers)
            ratios.append(loop_seconds / cold)
            rereads.append(warm)
            tag = f" run {run + 1}" if args.repeat > 1 else ""
            print(rate_line(f"(a) plain loop, 1 process{tag}", loop_seconds, n, audio_seconds))
            print(rate_line(f"(b) extract, {args.workers} workers, new store", cold, n, audio_seconds,
                            f"  x{loop_seconds / cold:.2f} vs loop" + (f", {failed} failed" if failed else "")))
            print(f"  (c) cached re-read from the store    {warm * 1000:8.1f} ms  "
                  f"({loop_seconds / warm:.0f}x faster than the loop)")
        if args.repeat > 1:
            print(f"  median over {args.repeat} runs: (b) x{np.median(ratios):.2f} vs loop "
                  f"(min x{min(ratios):.2f}, max x{max(ratios):.2f}); (c) {np.median(rereads) * 1000:.0f} ms "
                  f"(max {max(rereads) * 1000:.0f} ms)")

    print(f"other extractors, (b) extract with {args.workers} workers into a new store:")
    names = args.extractors.split(",") if args.extractors else OTHERS
    names = [] if names == ["none"] else names
    with tempfile.TemporaryDirectory(prefix="mmer-w2v-") as tmp:
        wav2vec2_path = args.wav2vec2_path or (random_wav2vec2_base(tmp) if "wav2vec2" in names else None)
        for extractor in other_extractors(names, wav2vec2_path):
            cold, warm, failed = through_store(extractor, manifest, args.workers)
            note = f"  cached {warm * 1000:.0f} ms" + (f", {failed} failed" if failed else "")
            from_audio = extractor.source_column == "audio_path"
            print(rate_line(extractor.name, cold, n, audio_seconds if from_audio else None, note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
