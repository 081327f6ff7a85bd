"""The model card builder, the variant index reader and the retry policy."""

from __future__ import annotations

import itertools
import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pandas as pd
import pytest
from tests.local_http import BackgroundHTTPServer

from pairflow.config import MlflowConfig
from pairflow.models.scratch import save_untrained_clip
from pairflow.registry.card import CardInputs, build_model_card, with_canary
from pairflow.registry.client import Registry
from pairflow.registry.retry import RegistryError, RegistryUnavailable
from pairflow.registry.variants import resolve_variants
from pairflow.report import StageReport
from pairflow.stages.register.register_version import gate_status
from pairflow.tracking import HTTP_BACKOFF_ENV, HTTP_RETRIES_ENV, HTTP_TIMEOUT_ENV


def test_card_without_inputs_states_what_is_missing() -> None:
    card = build_model_card(CardInputs(model_name="m"))
    for missing in (
        "no evaluate report with a gate decision",
        "no data stage reports were given",
        "no compressed variants",
        "no drift summary",
        "not stated in config",
    ):
        assert f"_not available: {missing}" in card


def _round_two_evaluate() -> StageReport:
    """An evaluate report as a second round writes it: a champion, deltas, drift."""
    delta = {
        "metric": "i2t_recall_at_1",
        "candidate": 0.62,
        "champion": 0.55,
        "delta": 0.07,
        "low": -0.021,
        "high": 0.158,
        "confidence": 0.95,
        "samples": 2000,
        "n": 90,
    }
    checks = [
        {
            "check": "floor",
            "metric": "i2t_recall_at_1",
            "value": 0.62,
            "n": 90,
            "lower_bound": 0.531,
            "confidence": 0.95,
            "chance": 1 / 90,
            "threshold": 0.21,
            "threshold_source": "chance",
            "passed": True,
        },
        {
            "check": "non_inferiority",
            "metric": "i2t_recall_at_1",
            "value": 0.07,
            "interval": [-0.021, 0.158],
            "confidence": 0.95,
            "candidate": 0.62,
            "champion": 0.55,
            "n": 90,
            "threshold": -0.1,
            "passed": True,
        },
        {"check": "drift", "value": True, "policy": "warn", "passed": True},
    ]
    return StageReport(
        stage="evaluate",
        rows_in=434,
        rows_out=434,
        metrics={
            "evaluated_rows": 90,
            "candidate": {"i2t_recall_at_1": 0.62, "i2t_recall_at_5": 0.9},
            "champion": {"version": "1", "run_id": "r1", "metrics": {"i2t_recall_at_1": 0.55}},
            "deltas": {"i2t_recall_at_1": delta},
            "gate": {
                "passed": True,
                "enforced": True,
                "reasons": ["PASS non-inferior ...", "champion models:/m@champion (version 1)"],
                "checks": checks,
            },
            "drift": {
                "skipped": False,
                "detected": True,
                "drifted_share": 0.5,
                "drifted_columns": ["caption_len", "brightness"],
                "column_p_values": {"caption_len": 0.001, "source": 0.7},
                "column_distances": {"brightness": 0.4, "width": 0.01},
                "reference_rows": 300,
                "current_rows": 310,
                "reasons": ["metadata: 2/4 columns drifted (caption_len, brightness)"],
            },
        },
    )


def test_card_opens_with_the_decision_and_its_intervals() -> None:
    reports = {
        "validate": StageReport(stage="validate", rows_in=10, rows_out=7, rejected={"corrupt": 3}),
        "ingest": StageReport(stage="ingest", rows_in=10, rows_out=10),
    }
    variants = [
        {
            "variant": "int8_onnx",
            "kind": "onnx",
            "chosen": True,
            "size_bytes": 2_000_000,
            "p50_ms_b1": 2.0,
            "p50_ms_b32": 20.0,
            "recall_delta": -0.01,
        },
        {
            "variant": "fp32_torch",
            "kind": "torch",
            "chosen": False,
            "size_bytes": 8_000_000,
            "p50_ms_b1": 6.0,
            "p50_ms_b32": 50.0,
            "recall_delta": 0.0,
        },
    ]
    card = build_model_card(
        CardInputs(
            model_name="m",
            lineage={"data_snapshot": "abc", "mlflow_run": "run1"},
            reports=reports,
            evaluate=_round_two_evaluate(),
            variants=variants,
            chosen_variant="int8_onnx",
            artifacts=["pairflow/reports/evaluate.json", "pairflow/model_card.md"],
            run_id="run1",
            experiment_id="7",
            champion_variant={"variant": "v1 fp32_onnx", "size_bytes": 4_000_000, "p50_ms_b1": 4.0},
        )
    )
    head = card.splitlines()[:40]
    text = "\n".join(head)
    assert "**Gate: PASSED** — candidate vs champion v1; 90 held-out rows" in text
    header = "| metric | candidate | champion | delta [95% CI] | threshold | result |"
    assert header in head
    # the interval sits in the delta cell of the gated metric's rows, not in a row of its own
    non_inf = next(
        ln for ln in head if ln.startswith("| i2t_recall_at_1 (vs champion) | 0.620 | 0.550 |")
    )
    assert "| +0.070 [-0.021, +0.158] 95% | CI low ≥ -0.100 | PASS |" in non_inf
    floor = next(
        ln for ln in head if ln.startswith("| i2t_recall_at_1 (floor) | 0.620 (≥0.531 at 95%)")
    )
    assert "+0.070 [-0.021, +0.158] 95%" in floor and "≥ 0.210" in floor
    assert "| drift | drift | — | — | policy warn | PASS |" in head
    # then the variant against fp32 and the champion, drift with its top column, lineage
    assert card.index("## Decision") < card.index("## Chosen variant") < card.index("## Drift")
    assert card.index("## Drift") < card.index("## Lineage") < card.index("## Data: rows per")
    assert "vs fp32: 4.00x smaller, 3.00x faster at batch 1" in card
    assert "vs champion: 2.00x smaller, 2.00x faster at batch 1" in card
    assert "**Drift: DETECTED**" in card and "| caption_len | p = 0.001 | yes |" in card
    assert card.index("| caption_len |") < card.index("| width |")
    # full dumps are attached JSON, linked; no flattened key rows remain
    path = "pairflow/reports/evaluate.json"
    assert f"[{path}](#/experiments/7/runs/run1/artifactPath/{path})" in card
    assert "deltas.i2t_recall_at_1" not in card and "candidate.i2t_recall_at_5" not in card
    assert "| validate | 10 | 7 | 3 | corrupt: 3 |" in card


def test_canary_outcome_goes_before_lineage_and_replaces_an_earlier_one() -> None:
    card = build_model_card(CardInputs(model_name="m", lineage={"a": "b"}))
    once = with_canary(
        card,
        "rolled_back",
        ["p95 latency 2.1x stable"],
        [{"weight": 10, "verdict": "ok"}, {"weight": 50, "verdict": "fail"}],
    )
    assert once.index("**Canary: rolled_back**") < once.index("## Lineage")
    assert "| 50% | fail |" in once and "- p95 latency 2.1x stable" in once
    assert "| step | metric |" not in once  # steps without per-test numbers
    measured = {
        "weight": 50,
        "verdict": "fail",
        "metrics": [
            {
                "metric": "latency_p95",
                "test": "exceedance_over_stable_p95_fisher_greater",
                "stable": 11.07,
                "candidate": 24.5,
                "statistic": 6.1,
                "p_adjusted": 0.0004,
                "n_candidate": 370,
                "n_stable": 349,
                "required_candidate": 305,
                "required_stable": 305,
                "power": 0.9,
                "min_effect": 0.08,
                "level": 0.0167,
                "regression": True,
                "powered": True,
            }
        ],
    }
    numbers = with_canary(card, "rolled_back", [], [measured])
    row = next(ln for ln in numbers.splitlines() if "exceedance_over_stable_p95" in ln)
    for cell in ("| 50% | latency_p95 |", "| 0.0004 |", "| 370/349 |", "| 305/305 (0.9) |"):
        assert cell in row, row
    assert "regression; step fail" in row
    twice = with_canary(once, "promoted", [], [])
    assert twice.count("## Canary") == 1 and "**Canary: promoted**" in twice
    assert "rolled_back" not in twice


def test_unenforced_or_unimplemented_gate_is_not_passed() -> None:
    stub = StageReport(
        stage="evaluate",
        rows_in=1,
        rows_out=1,
        implemented=False,
        metrics={"gate": {"passed": True, "enforced": False, "reasons": []}},
    )
    assert gate_status(stub)[0] == "not_enforced"
    assert gate_status(None)[0] == "unknown"


def test_variant_index_picks_chosen_and_falls_back_to_torch_for_onnx(tmp_path: Path) -> None:
    root = tmp_path / "compressed"
    save_untrained_clip(root / "fp32_torch", ["a red circle", "a blue square"])
    (root / "int8_onnx").mkdir()
    (root / "int8_onnx" / "vision.onnx").write_bytes(b"x")
    index = {
        "chosen": "int8_onnx",
        "variants": [
            {"name": "fp32_torch", "kind": "torch", "metrics": {"size_bytes": 10}},
            {"name": "int8_onnx", "kind": "onnx", "metrics": {"size_bytes": 3}},
        ],
    }
    (root / "variants.json").write_text(json.dumps(index))
    found = resolve_variants(root, None)
    assert found.chosen.name == "int8_onnx" and found.hf_dir == root / "fp32_torch"
    assert [v.name for v in found.others] == ["fp32_torch"]
    assert found.table()[0] == {
        "variant": "int8_onnx",
        "kind": "onnx",
        "chosen": True,
        "size_bytes": 3,
    }
    index["chosen"] = "missing"
    (root / "variants.json").write_text(json.dumps(index))
    with pytest.raises(Exception, match="chosen variant 'missing' is not listed"):
        resolve_variants(root, None)


class _FakeMlflow:
    """A registry endpoint of MLflow's REST API answering from a script: each request takes
    the next (status, body) of ``answers`` (the last one repeats); the times are recorded."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.times: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.times.append(time.monotonic())
                status, body = fake.answers[min(len(fake.times), len(fake.answers)) - 1]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.http = BackgroundHTTPServer(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def http_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's retry environment, restored after the test (the policy writes it)."""
    for name in (HTTP_RETRIES_ENV, HTTP_BACKOFF_ENV, HTTP_TIMEOUT_ENV):
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")  # exact delays


def _registry(url: str, retries: int, backoff: int) -> Registry:
    return Registry.from_config(
        MlflowConfig(
            tracking_uri=url, http_retries=retries, http_backoff_factor=backoff, http_timeout_s=10
        )
    )


Answer = tuple[int, dict[str, object]]
MODEL: Answer = (200, {"registered_model": {"name": "m"}})
UNAVAILABLE: Answer = (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"})
REFUSED: Answer = (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"})


def test_retries_back_off_then_fail_with_the_operation_named(http_policy: None) -> None:
    """The one retry layer under KFP's is MLflow's own (mlflow.http_*): transient answers are
    retried with growing delays, a failure that outlives them names the operation and the
    attempts, a refused request is not retried."""
    flaky = _FakeMlflow([UNAVAILABLE, UNAVAILABLE, MODEL])
    try:
        assert _registry(flaky.url, 4, 1).registered_model("m").name == "m"
    finally:
        flaky.close()
    assert len(flaky.times) == 3
    first, second = (b - a for a, b in itertools.pairwise(flaky.times))
    assert first < 1.0 and 1.9 < second < 3.5  # urllib3: 0 s, then factor x 2 s

    down = _FakeMlflow([UNAVAILABLE])
    try:
        with pytest.raises(RegistryUnavailable, match="get m failed after 3 attempts"):
            _registry(down.url, 2, 0).registered_model("m")
    finally:
        down.close()
    assert len(down.times) == 3

    refused = _FakeMlflow([REFUSED])
    try:
        with pytest.raises(RegistryError, match="m: no such registered model"):
            _registry(refused.url, 5, 0).registered_model("m")
    finally:
        refused.close()
    assert len(refused.times) == 1


def test_pyfunc_labels_come_from_a_trained_classifier_head(tmp_path: Path) -> None:
    """The pyfunc on a pairflow.stages.train classifier artifact (loaded as MLflow would: from the
    artifact folders; the context object is the only stand-in)."""
    from types import SimpleNamespace

    import torch

    from pairflow.models.heads import build_head
    from pairflow.models.scratch import build_processor, tiny_clip
    from pairflow.models.trained import save_trained
    from pairflow.registry.logged_model import example_input
    from pairflow.serve.pyfunc import PairClipModel

    captions = ["a red circle", "a blue square"]
    processor = build_processor(captions)
    clip = tiny_clip(processor.tokenizer)
    head = build_head(clip, "concat", 2)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.tensor([0.0, 5.0]))  # always "square"
    out = save_trained(
        tmp_path / "clf", clip, processor, kind="classifier", labels=["circle", "square"], head=head
    )
    model = PairClipModel()
    model.load_context(SimpleNamespace(artifacts={"hf": str(out)}, model_config={"kind": "torch"}))
    frame = pd.concat([example_input()] * 2, ignore_index=True)
    got = model.run(frame, params={"mode": "labels"})
    assert list(got["label"]) == ["square", "square"]
    assert got["label_score"].iloc[0] == pytest.approx(
        torch.tensor([0.0, 5.0]).softmax(0)[1].item()
    )
    # probabilities over every class, in the registered label order
    assert got["probabilities"].iloc[0] == pytest.approx(
        torch.tensor([0.0, 5.0]).softmax(0).tolist()
    )
    with pytest.raises(ValueError, match="needs both image and caption"):
        model.run(frame[["image"]], params={"mode": "labels"})


def test_signature_declares_the_outputs_of_every_mode(tmp_path: Path) -> None:
    """Each mode's answer (a real untrained CLIP run through the pyfunc) has its columns, and
    their types, declared in the logged signature's outputs."""
    from types import SimpleNamespace

    from pairflow.registry.logged_model import example_input, signature
    from pairflow.serve.pyfunc import PairClipModel

    sig = signature()
    assert sig.outputs is not None
    declared = {c.name: c for c in sig.outputs.inputs}
    assert all(not c.required for c in declared.values())
    hf = save_untrained_clip(tmp_path / "clip", ["a red circle", "a blue square"])
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["circle", "square"]))
    model = PairClipModel()
    model.load_context(
        SimpleNamespace(artifacts={"hf": str(hf), "labels": str(labels)}, model_config={})
    )
    seen: set[str] = set()
    for mode in ("scores", "labels", "embeddings"):
        got = model.run(example_input(), params={"mode": mode})
        assert set(got.columns) <= set(declared), (mode, list(got.columns))
        seen |= set(got.columns)
    assert seen == set(declared)
    assert declared["score"].type.name == "double"
    assert "Array(double)" in str(declared["image_embedding"].type)


def test_first_run_card_has_no_champion_row_and_readable_sizes() -> None:
    first = _round_two_evaluate()
    first.metrics["champion"] = None
    variants = [{"variant": "fp32_torch", "kind": "torch", "size_bytes": 52_000, "p50_ms_b1": 1.0}]
    card = build_model_card(
        CardInputs(model_name="m", evaluate=first, variants=variants, chosen_variant="fp32_torch")
    )
    assert "first run: no champion" in card
    assert "| chosen | 52.0 kB | 1.00 |" in card
    assert not [ln for ln in card.splitlines() if ln.startswith("| champion")]
