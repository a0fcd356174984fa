"""Pack what benchmarks/gpu_check.sh needs into one archive, on a machine that has the data.

    python benchmarks/pack_gpu_check.py --data-root ../shared/data --out gpu_check_ravdess.tar.gz

The GPU machine has the repository but not the corpus. The archive holds (under ``.gpu_check/``)
the RAVDESS speech tree with every file name and size but no content (sparse files: the corpus
lists its clips and hashes its manifest from names and sizes, and never reads a clip whose
features are stored), and the feature store entry of the ``logmel-merc`` extractor keyed to that
tree's manifest. ``gpu_check.sh`` unpacks it in the repository root and trains from it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGE = ".gpu_check"  # relative: the manifest's paths are the same wherever the repository lives


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="the folder holding ravdess/Actor_XX")
    parser.add_argument("--out", default="gpu_check_ravdess.tar.gz")
    parser.add_argument("--config", default=str(ROOT / "benchmarks" / "gpu_check.yaml"))
    args = parser.parse_args()

    from mmer_bench.features.base import extract
    from mmer_bench.features.store import FeatureStore
    from mmer_bench.registry import CORPORA, EXTRACTORS

    conf = yaml.safe_load(Path(args.config).read_text())
    options = conf.get("corpus_options", {})
    extractor = EXTRACTORS.get("logmel-merc")()
    corpus = CORPORA.get("ravdess")(args.data_root, **options)  # as given: the cached key reads it so
    manifest = corpus.manifest()
    print(f"RAVDESS: {len(manifest)} clips; extracting or reading logmel-merc ...", flush=True)
    features = extract(extractor, manifest, corpus.manifest_hash(manifest), FeatureStore())
    if features.errors:
        raise SystemExit(f"logmel-merc failed on {len(features.errors)} clips: {list(features.errors.items())[:3]}")

    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        real_root = Path(manifest["audio_path"].iloc[0]).parents[1]  # .../ravdess
        for path in manifest["audio_path"]:
            source = Path(path)
            target = stage / STAGE / "data" / "ravdess" / source.relative_to(real_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                f.truncate(source.stat().st_size)  # same size, no bytes: a sparse file
        cwd = os.getcwd()
        os.chdir(stage)  # the skeleton's manifest exactly as gpu_check.sh will see it
        try:
            skeleton = CORPORA.get("ravdess")(f"{STAGE}/data", **options)
            skeleton_manifest = skeleton.manifest()
            if sorted(skeleton_manifest["clip_id"]) != sorted(manifest["clip_id"]):
                raise SystemExit("the skeleton tree lists other clips than the corpus")
            key = extractor.cache_key(skeleton.manifest_hash(skeleton_manifest))
        finally:
            os.chdir(cwd)
        store = FeatureStore(stage / STAGE / "cache" / "features")
        store.write(extractor.name, key, dict(features.arrays),
                    {"extractor": extractor.name, "version": extractor.version, "params": extractor.params(),
                     "manifest": "gpu-check skeleton", "kind": extractor.kind})
        tar = shutil.which("tar")
        subprocess.run([tar, "--sparse", "-czf", str(out), STAGE], cwd=stage, check=True)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 2**20:.1f} MiB): {len(manifest)} clips of logmel-merc features + the file tree")
    print(f"on the GPU machine, in the repository: bash benchmarks/gpu_check.sh {out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
