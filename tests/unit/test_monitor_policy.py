"""The retrain trigger's policy: each guardrail decides, with its reason and numbers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pairflow.stages.monitor.policy import TriggerHistory, decide
from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
WINDOW = WindowId("2026-12-05T12:00:00+00:00", "2026-12-06T12:00:00+00:00", "clip", "3")


def _verdict(**kw: object) -> WindowVerdict:
    base = WindowVerdict(
        window=WINDOW,
        rows=500,
        reference_rows=300,
        judged=True,
        drift=True,
        drift_share=0.8,
        drifted_columns=["width", "caption_chars"],
        embedding_auc={"image": 0.93, "text": 0.61},
        score_mean=0.21,
        reference_score_mean=0.24,
        score_drop=0.03,
        score_dropped=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


CFG = MonitorConfig(min_window_rows=200, cooldown_hours=24, embedding_auc=0.75)


def test_drift_triggers_and_carries_the_numbers() -> None:
    d = decide(_verdict(), TriggerHistory(), CFG, NOW, dry_run=False)
    assert (d.outcome, d.reason) == ("trigger", "trigger")
    assert d.causes == ["drift"]
    assert d.numbers["rows"] == 500 and d.numbers["drift_share"] == 0.8
    assert d.numbers["embedding_auc"] == {"image": 0.93, "text": 0.61}
    assert d.numbers["score_drop_margin"] == 0.05
    assert "image embedding AUC 0.930 (limit 0.75)" in d.message
    assert d.window_key == WINDOW.key and d.decided_at == "2026-12-06T12:00:00+00:00"


def test_score_drop_beyond_the_margin_triggers_without_drift() -> None:
    v = _verdict(drift=False, score_drop=0.08, score_dropped=True)
    d = decide(v, TriggerHistory(), CFG, NOW, dry_run=False)
    assert d.triggered and d.causes == ["score_drop"]
    # the margin is applied to the figure even when the flag was not set
    d = decide(_verdict(drift=False, score_drop=0.051), TriggerHistory(), CFG, NOW, False)
    assert d.triggered and d.causes == ["score_drop"]
    d = decide(_verdict(drift=False, score_drop=0.049), TriggerHistory(), CFG, NOW, False)
    assert (d.outcome, d.reason) == ("skip", "no_drift")
    assert "mean score drop +0.049 (margin 0.050)" in d.message


def test_too_small_window_is_skipped_with_the_counts_before_anything_else() -> None:
    v = _verdict(rows=150, judged=False, reasons=["too few rows"])
    d = decide(v, TriggerHistory(), CFG, NOW, dry_run=False)
    assert (d.outcome, d.reason) == ("skip", "window_too_small")
    assert d.message == "window_too_small: 150 < 200 rows"
    assert d.numbers["min_window_rows"] == 200


def test_unjudged_window_names_the_monitor_reason() -> None:
    v = _verdict(judged=False, drift=False, reasons=["no serving reference for clip v3"])
    d = decide(v, TriggerHistory(), CFG, NOW, dry_run=False)
    assert d.reason == "not_judged"
    assert d.message == "not_judged: no serving reference for clip v3"


def test_already_submitted_window_is_not_submitted_again() -> None:
    hist = TriggerHistory(NOW - timedelta(hours=30), WINDOW.key, {WINDOW.key: "run-1"})
    d = decide(_verdict(), hist, CFG, NOW, dry_run=False)
    assert d.reason == "already_submitted"
    assert d.message == f"already_submitted: {WINDOW.key} -> run-1"
    hist = TriggerHistory(NOW - timedelta(hours=30), WINDOW.key, {WINDOW.key: ""})
    assert "in flight" in decide(_verdict(), hist, CFG, NOW, False).message


def test_cooldown_blocks_until_it_has_passed() -> None:
    last = NOW - timedelta(hours=23)
    hist = TriggerHistory(last, "other", {"other": "run-0"})
    d = decide(_verdict(), hist, CFG, NOW, dry_run=False)
    assert d.reason == "cooldown"
    assert d.message == (
        "cooldown: last triggered 2026-12-05T13:00:00+00:00, next allowed 2026-12-06T13:00:00+00:00"
    )
    assert d.numbers["next_allowed_at"] == "2026-12-06T13:00:00+00:00"
    later = decide(_verdict(), hist, CFG, NOW + timedelta(hours=1), dry_run=False)
    assert later.triggered and later.numbers["last_triggered_key"] == "other"


def test_dry_run_and_disabled_trigger_say_what_they_would_do() -> None:
    d = decide(_verdict(), TriggerHistory(), CFG, NOW, dry_run=True)
    assert (d.outcome, d.reason) == ("skip", "dry_run")
    assert (
        d.message.startswith("dry_run: would trigger on drift") and "nothing submitted" in d.message
    )
    # a dry run reports the real reason when it would not trigger anyway
    assert decide(_verdict(drift=False), TriggerHistory(), CFG, NOW, True).reason == "no_drift"
    off = MonitorConfig(trigger=False)
    d = decide(_verdict(), TriggerHistory(), off, NOW, dry_run=False)
    assert d.reason == "trigger_disabled" and "monitor.trigger=false" in d.message


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(_verdict(), TriggerHistory(), CFG, datetime(2026, 12, 6), dry_run=False)
