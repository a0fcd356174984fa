"""Read an offline W&B run back: its ``run-*.wandb`` file is a LevelDB-style log (32 KiB blocks
of CRC-checked chunks) of ``wandb_internal_pb2.Record`` protobufs. wandb ships no Python reader
any more (its core is in Go), so the tests carry this small one."""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK = 32768
_HEADER = 7  # file: b":W&B" + magic (2) + version (1); chunk: crc32 (4) + length (2) + type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B run log")
    out, buffer, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the rest of a block too small for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        payload = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            out.append(payload)
        elif kind == _FIRST:
            buffer = payload
        elif kind == _MIDDLE:
            buffer += payload
        elif kind == _LAST:
            out.append(buffer + payload)
    parsed = []
    for payload in out:
        record = pb.Record()
        record.ParseFromString(payload)
        parsed.append(record)
    return parsed


def read_run(run_dir: Path) -> dict:
    """{"run": the run record, "config": {key: value}, "summary": {key path: value},
    "history": {key path: [values]}} of an ``offline-run-*`` folder."""
    (log,) = Path(run_dir).glob("run-*.wandb")
    info = {"run": None, "config": {}, "summary": {}, "history": {}}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info["run"] = record.run
            for item in record.run.config.update:
                info["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                info["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                info["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                info["history"].setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
    return info
