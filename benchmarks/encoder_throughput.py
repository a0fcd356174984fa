"""Frozen-encoder extraction throughput: our batched extractor against a one-clip-at-a-time loop.

    python benchmarks/encoder_throughput.py --data-root ../shared/data --limit 48
    python benchmarks/encoder_throughput.py --family whisper --limit 16
    python benchmarks/encoder_throughput.py --device cuda --bf16 --limit 400   # the GPU check

On the same clips (RAVDESS speech clips drawn at random, seed 0, decoded beforehand; generated
speech-like audio when the corpus is absent) and the same randomly initialised base-size model
(transformers' default config of ``--family``: wav2vec2-base's 95 M parameters for wav2vec2,
saved to a temporary folder and loaded by path; the weights' values do not change the speed):

  (a) the loop feature-extraction scripts usually run: for each clip, the model's own feature
      extractor (``AutoFeatureExtractor``), ``model(..., output_hidden_states=True)``, the mean
      over frames of every hidden state;
  (b) the ``audio-encoder`` extractor (features/encoders.py) computing the same (layer "all",
      pooling "mean"): clips sorted by length and batched with padding masks.

It prints clips/s and audio-seconds/s of each, the speed-up, and the largest difference between
their outputs. ``--repeat N`` alternates (a) and (b) N times and reports each round and the
median speed-up: on a machine other jobs load, one round can be off by a factor of two. ``--bf16`` runs both under bfloat16 autocast (a GPU, or a CPU with bf16 support).
Torch uses every core unless ``--threads``.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmer_bench.features.audio import load_audio  # noqa: E402
from mmer_bench.features.encoders import AudioEncoderFeatures, load_encoder, save_random_encoder  # noqa: E402

RATE = 16000


def clips_from(data_root: str, limit: int) -> tuple[list[np.ndarray], str]:
    files = sorted(glob.glob(str(Path(data_root) / "ravdess" / "Actor_*" / "03-01-*")))
    if files:
        rng = np.random.default_rng(0)
        chosen = rng.choice(files, size=min(limit, len(files)), replace=False)
        return [load_audio(f, RATE) for f in chosen], f"{len(chosen)} RAVDESS speech clips from {data_root}"
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(limit):  # 2.5-4.5 s of a gliding harmonic voice with noise, RAVDESS-like lengths
        t = np.arange(int(rng.uniform(2.5, 4.5) * RATE)) / RATE
        f0 = rng.uniform(100, 250) * (1 + 0.1 * np.sin(2 * np.pi * t))
        voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / RATE) / k for k in range(1, 6))
        clips.append((0.2 * voice + rng.normal(0, 0.01, t.size)).astype(np.float32))
    return clips, f"{limit} generated clips (no RAVDESS under {data_root})"


def loop_extract(folder: str, clips: list[np.ndarray], device: str, bf16: bool) -> list[np.ndarray]:
    """(a): one clip at a time through the model's own feature extractor."""
    enc = load_encoder(folder)
    model = enc.module.to(device).eval()
    out = []
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        for clip in clips:
            inputs = enc.processor(clip, sampling_rate=RATE, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_values", "input_features")}
            states = model(**inputs, output_hidden_states=True).hidden_states
            if enc.input_name == "input_features":  # Whisper: the frames of the real audio only
                frames = -(-len(clip) // 320)
                states = [s[:, :frames] for s in states]
            out.append(torch.stack([s[0].float().mean(0) for s in states]).cpu().numpy())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--limit", type=int, default=48, help="clips (drawn at random, seed 0)")
    parser.add_argument("--family", default="wav2vec2", choices=("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper"))
    parser.add_argument("--model", help="a local checkpoint folder instead of the random base-size model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for both (GPU check)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-loop", action="store_true", help="only the batched extractor (long GPU runs)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate loop and batched N times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clips, source = clips_from(args.data_root, args.limit)
    seconds = sum(len(c) for c in clips) / RATE
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MMER_CACHE", tmp)  # the checksum memo of the temporary model
        folder = args.model or str(save_random_encoder(args.family, Path(tmp) / args.family, size="base"))
        n_params = sum(p.numel() for p in load_encoder(folder).module.parameters())
        print(f"{source}: {seconds:.1f} s of audio; model {args.model or args.family + ' (random, base size)'} "
              f"{n_params / 1e6:.1f} M parameters; device {args.device}{' bf16' if args.bf16 else ''}; "
              f"{torch.get_num_threads()} torch threads")
        extractor = AudioEncoderFeatures(model=folder, layer="all", batch_size=args.batch_size, device=args.device,
                                         dtype="bfloat16" if args.bf16 else "float32")
        extractor.encoder()  # load outside the timing, as the loop's model is
        items = [(str(i), c) for i, c in enumerate(clips)]
        extractor.encode_all(items[:2], args.threads)  # warm-up (allocator, kernels)
        if not args.skip_loop:
            loop_extract(folder, clips[:2], args.device, args.bf16)  # warm-up
        print(f"{'':48s} {'clips/s':>9s} {'audio-s/s':>10s} {'wall s':>8s}")
        ratios = []
        for round_ in range(args.repeat):
            rows = []
            if not args.skip_loop:
                started = time.perf_counter()
                single = loop_extract(folder, clips, args.device, args.bf16)
                rows.append(("one clip at a time (feature extractor + model)", time.perf_counter() - started))
            started = time.perf_counter()
            batched = extractor.encode_all(items, args.threads)
            rows.append(("batched by length, masks (audio-encoder)", time.perf_counter() - started))
            for name, t in rows:
                print(f"{name:48s} {len(clips) / t:9.2f} {seconds / t:10.2f} {t:8.1f}")
            if not args.skip_loop:
                ratios.append(rows[0][1] / rows[1][1])
                diff = max(float(np.abs(batched[str(i)] - s).max()) for i, s in enumerate(single))
                print(f"round {round_ + 1}: speed-up of batching {ratios[-1]:.2f}x; largest output difference {diff:.2e}")
        if ratios:
            print(f"median speed-up over {len(ratios)} rounds: {float(np.median(ratios)):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
