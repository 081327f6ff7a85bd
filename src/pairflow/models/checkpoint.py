"""Atomic training checkpoints: a new one is complete before the old one is dropped.

Layout of ``<dir>/step-<NNNNNNNN>/``: ``model.safetensors`` (weights), ``best.safetensors``
(best weights so far, when any), ``state.pt`` (optimizer, scheduler, scaler, counters and RNG
states: tensors and plain Python values only, read back with ``torch.load(weights_only=True)``)
and ``meta.json``. ``<dir>/LATEST`` names the newest complete one.

A checkpoint is written into a temporary folder, fsynced, renamed into place, and only then is
``LATEST`` replaced (write + ``os.replace``) and older folders removed. If writing fails (disk
full...), the temporary folder is removed and :class:`CheckpointError` is raised; ``LATEST``
still names the previous, intact checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pairflow.errors import PairflowError

LATEST = "LATEST"


class CheckpointError(PairflowError):
    """A checkpoint that cannot be written or read."""


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [str(np_state[0]), np_state[1].tolist(), *(float(x) for x in np_state[2:])],  # type: ignore[index]
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


@dataclass
class Checkpoint:
    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    state: dict[str, Any]


def save_checkpoint(
    directory: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    best: dict[str, torch.Tensor] | None = None,
    keep: int = 1,
) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep`` ones."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-step-", dir=directory))
    try:
        save_file(_contiguous(weights), str(tmp / "model.safetensors"))
        if best is not None:
            save_file(_contiguous(best), str(tmp / "best.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step}) + "\n")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = directory / f".{LATEST}.tmp"
        pointer.write_text(final.name + "\n")
        os.replace(pointer, directory / LATEST)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{directory}: cannot write checkpoint at step {step} ({exc}); "
            "the previous checkpoint is intact"
        ) from exc
    old = sorted(p for p in directory.glob("step-*") if p.is_dir() and p != final)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The folder ``LATEST`` names, or None when there is no complete checkpoint."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    path = directory / pointer.read_text().strip()
    return path if (path / "meta.json").is_file() else None


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        weights = load_file(str(path / "model.safetensors"))
        best_file = path / "best.safetensors"
        best = load_file(str(best_file)) if best_file.is_file() else None
        state = torch.load(path / "state.pt", weights_only=True)
        step = int(json.loads((path / "meta.json").read_text())["step"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    return Checkpoint(path, step, weights, best, state)
