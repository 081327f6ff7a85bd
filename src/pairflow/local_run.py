"""Run the ``retrain`` pipeline on this machine through ``kfp.local`` (SubprocessRunner)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from pairflow import tracking
from pairflow.config import PairflowConfig, param_values_from_config
from pairflow.errors import PairflowError
from pairflow.report import StageReport
from pairflow.summary import find_reports

log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ITERATION = re.compile(r"-iteration-(\d+)$")


@dataclass
class LocalRunResult:
    """What a local pipeline run produced and where it lives."""

    succeeded: bool
    seconds: float
    run_dir: Path | None
    tracking_uri: str
    experiment: str
    reports: dict[str, StageReport] = field(default_factory=dict)
    error: str = ""
    log_dir: Path | None = None


@dataclass(frozen=True)
class StepEvent:
    """A pipeline step (one task instance) started or ended; its executor log is ``log``."""

    task: str
    kind: Literal["start", "end"]
    log: Path
    task_dir: Path
    ok: bool = True
    seconds: float = 0.0


StepListener = Callable[[StepEvent], None]


def pipeline_steps(pipeline: object) -> list[str]:
    """The executor tasks of a compiled pipeline (kfp.local task names) in DAG order.

    Sub-DAGs (ParallelFor, conditions, exit handlers) are expanded in place; each task's
    ``dependent_tasks`` orders it after what it needs.
    """
    spec = getattr(pipeline, "pipeline_spec", None)
    if spec is None:
        return []
    components = spec.components
    out: list[str] = []

    def visit(dag: Any) -> None:
        tasks = dict(dag.tasks)
        placed: set[str] = set()
        while len(placed) < len(tasks):
            ready = sorted(
                name
                for name, task in tasks.items()
                if name not in placed and set(task.dependent_tasks) & set(tasks) <= placed
            )
            if not ready:  # a cycle cannot compile; keep the rest in name order regardless
                ready = sorted(set(tasks) - placed)
            name = ready[0]
            placed.add(name)
            comp_name = tasks[name].component_ref.name
            comp = components[comp_name]
            if comp.HasField("dag"):
                visit(comp.dag)
            elif comp_name.removeprefix("comp-") not in out:
                out.append(comp_name.removeprefix("comp-"))

    visit(spec.root.dag)
    return out


def _task_of(full_command: list[str]) -> tuple[str, Path]:
    """Task name and task root dir, read from the ``--executor_input`` kfp.local passes."""
    try:
        executor_input = json.loads(full_command[full_command.index("--executor_input") + 1])
        task_dir = Path(executor_input["outputs"]["outputFile"]).parent
    except (ValueError, IndexError, KeyError, json.JSONDecodeError) as exc:
        raise RuntimeError(
            f"kfp.local task command without a readable --executor_input: {exc}"
        ) from exc
    return task_dir.name, task_dir


@contextlib.contextmanager
def _root_logger_restored() -> Iterator[None]:
    """Give the root logger its handlers and level back after a kfp.local run.

    kfp.local (2.17, ``logging_utils.local_logger_context``) swaps the root handlers for a
    ``StreamHandler(sys.stdout)`` around every task and restores the list it saw; with
    ParallelFor iterations in threads, one task saves another's handler and puts it back
    for good. That handler writes to the run's orchestration log, which is closed after the
    run: every later log line then fails with "I/O operation on closed file"."""
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    try:
        yield
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)


class _TaskLogs:
    """Runs each kfp.local task subprocess with its output in a log file per task.

    kfp.local's SubprocessRunner streams every executor's output to stdout through
    ``kfp.local.subprocess_task_handler.run_local_subprocess`` (kfp 2.17). This swaps that
    function for one with the same contract (run the command, return its exit code) that
    writes the output to ``<run dir>/logs/<task>.log`` (``<task>-<i>.log`` for ParallelFor
    iteration ``i``) and, with ``verbose``, also streams it as before.
    """

    def __init__(
        self, root: Path, *, verbose: bool, listener: StepListener | None, stdout: TextIO
    ) -> None:
        self.root = root.resolve()
        self.verbose = verbose
        self.listener = listener
        self.stdout = stdout
        self.lock = threading.Lock()
        self.taken: set[Path] = set()
        self.log_dir: Path | None = None

    def _log_path(self, task: str, task_dir: Path) -> Path:
        # kfp.local task dirs: <root>/<run>/<task> or <root>/<run>/for-loop-N-iteration-I/<task>
        relative = task_dir.resolve().relative_to(self.root)
        log_dir = self.root / relative.parts[0] / "logs"
        iteration = _ITERATION.search(task_dir.parent.name)
        stem = f"{task}-{iteration.group(1)}" if iteration else task
        with self.lock:
            self.log_dir = log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
            n, path = 1, log_dir / f"{stem}.log"
            while path in self.taken:
                n += 1
                path = log_dir / f"{stem}.{n}.log"
            self.taken.add(path)
        return path

    def _emit(self, event: StepEvent) -> None:
        if self.listener is not None:
            self.listener(event)

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        task, task_dir = _task_of(full_command)
        log_path = self._log_path(task, task_dir)
        env = {**os.environ, **env_vars} if env_vars else None
        self._emit(StepEvent(task, "start", log_path, task_dir))
        start = time.perf_counter()
        with (
            log_path.open("w", encoding="utf-8") as log_file,
            subprocess.Popen(
                full_command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                env=env,
            ) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                if self.verbose:
                    self.stdout.write(line)
            code = proc.wait()
        self._emit(
            StepEvent(
                task, "end", log_path, task_dir, ok=code == 0, seconds=time.perf_counter() - start
            )
        )
        return code

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        # lazy: kfp (slow to import); only this path needs it
        from kfp.local import subprocess_task_handler

        original = subprocess_task_handler.run_local_subprocess
        subprocess_task_handler.run_local_subprocess = self.run
        try:
            yield
        finally:
            subprocess_task_handler.run_local_subprocess = original


def prepare_local_config(cfg: PairflowConfig) -> PairflowConfig:
    """Pin the work dir, data source and MLflow URI to absolute values for subprocess steps."""
    out = cfg.model_copy(deep=True)
    workdir = Path(out.run.workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out.run.workdir = str(workdir)
    if out.data.source and "://" not in out.data.source:
        out.data.source = str(Path(out.data.source).expanduser().resolve())
    tracking.resolve_mlflow_settings(out)
    out.kubeflow.io_retries = out.kubeflow.local_io_retries
    out.kubeflow.io_retry_backoff_s = 2
    return out


def run_pipeline_locally(
    cfg: PairflowConfig,
    *,
    enable_caching: bool = False,
    verbose: bool = False,
    listener: StepListener | None = None,
    on_start: Callable[[list[str]], None] | None = None,
) -> LocalRunResult:
    """Run the whole DAG in this Python; returns reports even when a step fails.

    Each step's executor output goes to ``<run dir>/logs/<task>.log``; kfp.local's own
    orchestration messages to ``<run dir>/logs/kfp.log``. With ``verbose`` both also stream to
    stdout as kfp.local prints them. ``listener`` hears each step start and end;
    ``on_start`` gets the pipeline's step names before the first one runs.
    """
    if not cfg.data.source:
        raise PairflowError("data.source: empty; pass --set data.source=PATH_OR_URI")
    cfg = prepare_local_config(cfg)
    # lazy: kfp (slow to import); only this path needs it
    from kfp import local

    from pairflow.pipelines.retrain import build_pipeline

    workdir = Path(cfg.run.workdir)
    root = workdir / "runs"
    root.mkdir(parents=True, exist_ok=True)
    # Creating the experiment here also runs MLflow's DB migrations once, before steps race.
    tracking.ensure_experiment(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(workdir / "workspace"),
        raise_on_error=True,
        enable_caching=enable_caching,
    )
    before = {p.name for p in root.iterdir()}
    pipeline = build_pipeline(cfg)
    if on_start is not None:
        on_start(pipeline_steps(pipeline))
    start = time.perf_counter()
    error = ""
    stdout = sys.stdout
    task_logs = _TaskLogs(root, verbose=verbose, listener=listener, stdout=stdout)
    orchestration_log = root / f".kfp-{os.getpid()}-{time.time_ns()}.log"
    with (
        _root_logger_restored(),
        warnings.catch_warnings(),
        task_logs.installed(),
        orchestration_log.open("w", encoding="utf-8") as kfp_log,
        contextlib.redirect_stdout(stdout if verbose else kfp_log),
    ):
        # Local steps run in this Python, not in the configured cluster image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline(**param_values_from_config(cfg))
            succeeded = True
        except RuntimeError as exc:
            message = _ANSI.sub("", str(exc))
            succeeded, error = False, message.splitlines()[0] if message else repr(exc)
    seconds = time.perf_counter() - start
    new = sorted(
        (p for p in root.iterdir() if p.name not in before and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    run_dir = new[-1] if new else None
    log_dir = task_logs.log_dir or (run_dir / "logs" if run_dir else None)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        orchestration_log.replace(log_dir / "kfp.log")
    else:
        orchestration_log.unlink(missing_ok=True)
    reports = find_reports(run_dir) if run_dir else {}
    return LocalRunResult(
        succeeded,
        seconds,
        run_dir,
        cfg.mlflow.tracking_uri,
        cfg.mlflow.experiment,
        reports,
        error,
        log_dir,
    )
