"""The monitor's gauges through a real Pushgateway (Debian ``prometheus-pushgateway``) into a
real Prometheus (Debian ``prometheus``) that scrapes it with ``honor_labels`` and evaluates
the monitor's alert rules from manifests/base/alerts.yaml.

Each window's push replaces the model's previous figures (group job + model_name);
Prometheus' query API returns the pushed values with the model's labels, and the
``PairflowMonitorDriftPersists`` alert fires once three windows in a row drifted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.manifests_render import find_object, render_overlay, require_tool

from pairflow.stages.monitor.gauges import JOB, GaugePushError, push_gauges
from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=3) as resp:
        body: bytes = resp.read()
        return body


@dataclass
class Stack:
    gateway: str
    prometheus: str
    procs: list[subprocess.Popen[bytes]]


def _until(what: str, probe: Any, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> Any:
    """``probe()``'s first truthy answer; fails if a process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{what}: {proc.args!r} exited ({proc.returncode})"
        try:
            got = probe()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A pushgateway and a prometheus scraping it, on 127.0.0.1, stopped afterwards."""
    gateway_bin = require_tool("prometheus-pushgateway", "prometheus-pushgateway (Debian)")
    prom_bin = require_tool("prometheus", "prometheus (Debian)")
    gw_port, prom_port = _port(), _port()
    rule = find_object(render_overlay("prod"), "PrometheusRule", "pairflow-monitor")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    conf = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{gw_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    procs: list[subprocess.Popen[bytes]] = []
    with (tmp_path / "stack.log").open("wb") as log:
        try:
            procs.append(
                subprocess.Popen(
                    [
                        gateway_bin,
                        f"--web.listen-address=127.0.0.1:{gw_port}",
                        f"--persistence.file={tmp_path / 'pgw.data'}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            procs.append(
                subprocess.Popen(
                    [
                        prom_bin,
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            gw, prom = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{prom_port}"
            _until("pushgateway ready", lambda: _get(f"{gw}/-/ready"), procs)
            _until("prometheus ready", lambda: _get(f"{prom}/-/ready"), procs)
            yield Stack(gw, prom, procs)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=20)


def _verdict(day: int, drift: bool, auc: float) -> WindowVerdict:
    win = WindowId(
        f"2026-01-{day:02d}T00:00:00+00:00", f"2026-01-{day + 1:02d}T00:00:00+00:00", "clip", "7"
    )
    v = WindowVerdict(win, 250 + day, 400, judged=True, drift=drift, drift_share=0.5)
    v.embedding_auc = {"image": auc, "text": 0.55}
    v.score_drop = 0.01
    return v


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    result: list[dict[str, Any]] = json.loads(_get(url))["data"]["result"]
    return result


def _value(prom: str, expr: str, want: float) -> dict[str, Any] | None:
    for sample in _query(prom, expr):
        if abs(float(sample["value"][1]) - want) < 1e-9:
            return dict(sample["metric"])
    return None


def test_pushed_gauges_reach_prometheus_and_the_alert_fires(stack: Stack) -> None:
    gw, prom, procs = stack.gateway, stack.prometheus, stack.procs
    cfg = MonitorConfig(pushgateway_url=gw)
    push_gauges(_verdict(1, drift=True, auc=0.91), 1, cfg)
    text = _get(f"{gw}/metrics").decode()
    line = (
        f'pairflow_monitor_embedding_auc{{instance="",job="{JOB}",model_name="clip",'
        'model_version="7",tower="image"} 0.91'
    )
    assert line in text
    labels = _until(
        "window rows scraped",
        lambda: _value(prom, "pairflow_monitor_window_rows", 251),
        procs,
    )
    assert labels["job"] == JOB and labels["model_version"] == "7"
    got = _value(prom, 'pairflow_monitor_embedding_auc{tower="image"}', 0.91)
    assert got is not None and got["model_name"] == "clip"
    assert _value(prom, "pairflow_monitor_drift_detected", 1.0) is not None
    firing = 'ALERTS{alertname="PairflowMonitorDriftPersists",alertstate="firing"}'
    assert _query(prom, firing) == []
    # the next windows replace the figures; the third drifted window in a row fires the alert
    push_gauges(_verdict(2, drift=True, auc=0.93), 2, cfg)
    push_gauges(_verdict(3, drift=True, auc=0.95), 3, cfg)
    consecutive = "pairflow_monitor_consecutive_drift_windows"
    _until("three in a row scraped", lambda: _value(prom, consecutive, 3), procs)
    alert = _until("alert firing", lambda: _query(prom, firing), procs)
    assert alert[0]["metric"]["model_name"] == "clip" and alert[0]["metric"]["model_version"] == "7"
    assert len(_query(prom, "pairflow_monitor_window_rows")) == 1  # replaced, not added
    assert _value(prom, "pairflow_monitor_window_rows", 253) is not None


def test_a_gateway_that_is_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_port()}"  # nothing listens there
    with pytest.raises(GaugePushError, match=f"monitor.pushgateway_url {url}: pushing the gauges"):
        push_gauges(_verdict(1, drift=True, auc=0.9), 1, MonitorConfig(pushgateway_url=url))
