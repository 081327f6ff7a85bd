"""Local launcher: ``python -m torch.distributed.run`` with N processes on 127.0.0.1.

Children run ``python -m pairflow.stages.train`` (``pairflow.stages.train.worker``); their output
is streamed
line by line to ``on_line`` (the step's log / the CLI). A free port is picked on 127.0.0.1 and
passed as ``--master_addr 127.0.0.1 --master_port P`` (gloo on CPU).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pairflow.errors import PairflowError

PROGRESS_PREFIX = "[pairflow-train] step "


class TrainLaunchError(PairflowError):
    """The training processes failed (their last output lines are in the message)."""


@dataclass(frozen=True)
class WorkerArgs:
    config: Path
    manifest: str
    out: Path
    base: str
    checkpoint_dir: Path | None
    result: Path
    tracking_uri: str = ""
    run_id: str = ""

    def argv(self) -> list[str]:
        args = [
            "--config", str(self.config),
            "--manifest", self.manifest,
            "--out", str(self.out),
            "--base", self.base,
            "--result", str(self.result),
        ]  # fmt: skip
        if self.checkpoint_dir is not None:
            args += ["--checkpoint-dir", str(self.checkpoint_dir)]
        if self.tracking_uri and self.run_id:
            args += ["--tracking-uri", self.tracking_uri, "--run-id", self.run_id]
        return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun_command(nproc: int, worker_argv: Sequence[str], port: int | None = None) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1",
        "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1",
        "--master_port", str(port or free_port()),
        "-m", "pairflow.stages.train",
        *worker_argv,
    ]  # fmt: skip


def run_torchrun(
    nproc: int,
    worker: WorkerArgs,
    on_line: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> None:
    """Run the workers to completion; raise :class:`TrainLaunchError` if any fails."""
    cmd = torchrun_command(nproc, worker.argv())
    child_env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            on_line(line)
            tail = [*tail[-19:], line]
        code = proc.wait()
    if code != 0:
        errors = [ln for ln in tail if "error:" in ln]
        reason = errors[-1].split("error:", 1)[1].strip() if errors else "\n".join(tail[-8:])
        raise TrainLaunchError(f"train: torchrun exited with {code}: {reason}")
