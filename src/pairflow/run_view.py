"""One line per pipeline step while a local run goes: pending, running, done or failed.

On a terminal the lines update in place (rich ``Live``). Elsewhere (``make demo`` piped to a
file, CI logs) each step prints its line once, when it ends. A failed step prints the last
lines of its executor log and the log's path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pairflow.local_run import StepEvent
from pairflow.report import StageReport
from pairflow.summary import stage_figures

LOG_TAIL_LINES = 30
_STYLE = {"pending": "dim", "running": "yellow", "done": "green", "failed": "bold red"}
_MARK = {"pending": "·", "running": "…", "done": "✓", "failed": "✗", "skipped": "-"}


@dataclass
class StepLine:
    """The state of one step (all instances of one task, e.g. every validate shard)."""

    name: str
    status: str = "pending"
    started: float | None = None
    seconds: float = 0.0
    running: int = 0
    finished: int = 0
    failed_logs: list[Path] = field(default_factory=list)
    reports: dict[Path, StageReport] = field(default_factory=dict)

    def elapsed(self, now: float) -> float:
        if self.status == "running" and self.started is not None:
            return now - self.started
        return self.seconds

    def headline(self) -> str:
        reports = list(self.reports.values())
        if not reports:
            return ""
        if len(reports) == 1:
            return stage_figures(reports[0])
        rows_in = sum(r.rows_in for r in reports)
        rows_out = sum(r.rows_out for r in reports)
        return f"{len(reports)} shards: {rows_in} in, {rows_out} out"


def read_task_reports(task_dir: Path) -> dict[Path, StageReport]:
    """Stage reports a finished task wrote (its ``*report`` output artifacts)."""
    found: dict[Path, StageReport] = {}
    for path in sorted(task_dir.rglob("*report")):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # an HTML or binary output whose name ends in "report"
        if isinstance(data, dict) and "stage" in data:
            found[path] = StageReport.read(path)
    return found


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [f"(log unreadable: {exc.strerror})"]
    return text.splitlines()[-lines:]


class StepBoard:
    """Step lines of one pipeline run, fed by :class:`pairflow.local_run.StepEvent`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.steps: dict[str, StepLine] = {}
        self.lock = threading.Lock()
        self.live: Live | None = None

    # -- events ------------------------------------------------------------------------------

    def plan(self, names: list[str]) -> None:
        """The steps the pipeline will run, shown as pending."""
        with self.lock:
            for name in names:
                self.steps.setdefault(name, StepLine(name))
        self._refresh()

    def handle(self, event: StepEvent) -> None:
        with self.lock:
            step = self.steps.setdefault(event.task, StepLine(event.task))
            now = time.perf_counter()
            if event.kind == "start":
                if step.running == 0 and step.status != "failed":
                    step.status = "running"
                    step.started = now - step.seconds
                step.running += 1
                finished_line = None
            else:
                step.running -= 1
                step.finished += 1
                if event.ok:
                    step.reports.update(read_task_reports(event.task_dir))
                else:
                    step.failed_logs.append(event.log)
                    step.status = "failed"
                if step.running == 0:
                    if step.status != "failed":
                        step.status = "done"
                    step.seconds = now - (step.started or now)
                finished_line = self._line(step, now) if self.live is None else None
        if finished_line is not None and (step.running == 0 or not event.ok):
            self.console.print(finished_line)
        if not event.ok:
            self._print_failure(event)
        self._refresh()

    def _print_failure(self, event: StepEvent) -> None:
        tail = log_tail(event.log)
        out = self.live.console if self.live is not None else self.console
        # soft_wrap: paths and error lines are printed whole, never folded or cropped
        out.print(
            Text(f"step {event.task} failed; last {len(tail)} lines of {event.log}:", "bold red"),
            soft_wrap=True,
        )
        for line in tail:
            out.print(Text(f"  | {line}"), soft_wrap=True)
        out.print(Text(f"full log: {event.log}", "red"), soft_wrap=True)

    # -- rendering ---------------------------------------------------------------------------

    def _line(self, step: StepLine, now: float) -> Text:
        status = step.status
        text = Text(f"{_MARK.get(status, '?')} {status:<8}", _STYLE.get(status, ""))
        count = f" x{step.finished}" if step.finished > 1 else ""
        text.append(f"{step.name + count:<20}")
        timed = status in {"running", "done", "failed"}
        text.append(f"{step.elapsed(now):7.1f} s  " if timed else " " * 11)
        text.append(step.headline())
        text.truncate(self.console.width, overflow="ellipsis")
        return text

    def render(self) -> Table:
        table = Table.grid()
        table.add_column(no_wrap=True, overflow="ellipsis")
        now = time.perf_counter()
        with self.lock:
            for step in self.steps.values():
                table.add_row(self._line(step, now))
        return table

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def finish(self) -> None:
        """Steps that never ran (a gate or a failure upstream stopped them) are shown skipped."""
        with self.lock:
            skipped = [s for s in self.steps.values() if s.status == "pending"]
            for step in skipped:
                step.status = "skipped"
        if self.live is None:
            for step in skipped:
                self.console.print(self._line(step, time.perf_counter()))
        self._refresh()

    def split(self) -> list[tuple[str, float]]:
        """Seconds per step, in the order steps ran (wall time, not CPU time)."""
        with self.lock:
            return [(s.name, s.seconds) for s in self.steps.values() if s.finished]

    @contextmanager
    def shown(self) -> Iterator[StepBoard]:
        """Live lines on a terminal; printed lines otherwise."""
        if not self.console.is_terminal:
            yield self
            self.finish()
            return
        with Live(
            self.render(),
            console=self.console,
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self.render,
        ) as live:
            self.live = live
            try:
                yield self
            finally:
                self.finish()
                live.update(self.render(), refresh=True)
                self.live = None
