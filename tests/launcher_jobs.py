"""A stand-in job for the launcher tests: a frozen spec and a picklable top-level run function
that behaves as a training job (writes its own folder, DONE last) or a stacking job (reads its
sources' results). ``behaviour`` makes it fail, die or sleep."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StandInSpec:
    job_id: str
    out_dir: str
    depends_on: tuple = ()
    config_hash: str = "h0"
    value: int = 1
    behaviour: str = "ok"  # ok | fail | die | sleep:<s> | sleep-first:<s>


def run_stand_in(spec: StandInSpec) -> int:
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.behaviour == "fail":
        raise ValueError(f"{spec.job_id} broke on purpose")
    if spec.behaviour == "die":
        os._exit(9)  # a process killed from outside: no exception, no DONE
    if spec.behaviour.startswith("sleep:"):
        time.sleep(float(spec.behaviour.split(":")[1]))
    if spec.behaviour.startswith("sleep-first:"):  # the first attempt sleeps (to be killed), later ones do not
        attempts = out / "attempts"
        if not attempts.exists():
            attempts.write_text("1")
            time.sleep(float(spec.behaviour.split(":")[1]))
    import torch

    sources = [json.loads((Path(spec.out_dir).parent / d / "result.json").read_text())["value"] for d in spec.depends_on]
    value = spec.value + sum(sources)
    record = {"value": value, "pid": os.getpid(), "threads": torch.get_num_threads(),
              "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "started": time.time()}
    print(f"stand-in {spec.job_id} ran")  # goes to the job's log in a worker
    (out / "result.json").write_text(json.dumps(record))
    (out / "DONE").write_text(json.dumps({"config_hash": spec.config_hash}))
    return value
