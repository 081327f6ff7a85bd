"""The dataset-level data contract (Great Expectations 1.x, ephemeral context)."""

from __future__ import annotations

import html
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pairflow.config import ContractConfig, ValidateConfig
from pairflow.errors import PairflowError
from pairflow.stages.validate.contract import (
    ContractError,
    ContractResult,
    _nearest_rank,
    run_contract,
)

LABELS = ["circle", "square"]
SOURCES = ["synthetic", "web"]


def _kept(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "image": [f"/data/{i}.png" for i in range(n)],
            "caption": [f"a {LABELS[i % 2]} number {i} on a grey background" for i in range(n)],
            "label": [LABELS[i % 2] for i in range(n)],
            "source": [SOURCES[i % 2] for i in range(n)],
            "width": [64] * n,
        }
    )


def _rejected(n: int = 4) -> pd.DataFrame:
    out = _kept(n)
    out["id"] = [f"x{i}" for i in range(n)]
    out["reason"] = "corrupt_image"
    out["detail"] = "truncated"
    out["stage"] = "validate"
    return out


def _cfg(**contract: Any) -> ValidateConfig:
    contract.setdefault("allowed_sources", SOURCES)
    return ValidateConfig(allowed_labels=LABELS, contract=ContractConfig(**contract))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_good_frame_passes_and_writes_docs(tmp_path: Path, no_network: None) -> None:
    result = run_contract(_kept(), _rejected(), _cfg(), tmp_path / "docs")

    assert result.passed
    assert result.outcomes and all(o.success for o in result.outcomes)
    assert result.failed_critical() == []
    names = [o.name for o in result.outcomes]
    assert names == [
        "expect_table_row_count_to_be_between(min=10)",
        "expect_column_values_to_be_unique(id)",
        "expect_column_values_to_not_be_null(id, mostly=1)",
        "expect_column_values_to_not_be_null(image, mostly=1)",
        "expect_column_values_to_not_be_null(caption, mostly=1)",
        "expect_column_values_to_be_in_set(label)",
        "expect_column_values_to_be_in_set(source)",
        "expect_column_values_to_be_in_set(status=kept, mostly=0.5)",
        "expect_column_mean_to_be_between(caption_chars, min=5, max=300)",
        "expect_column_values_to_be_between(caption_chars, max=500, mostly=0.95)",
    ]
    assert [o.critical for o in result.outcomes] == [True] * 8 + [False] * 2
    by_name = {o.name: o for o in result.outcomes}
    assert by_name["expect_table_row_count_to_be_between(min=10)"].observed == "20 rows"
    rejects = by_name["expect_column_values_to_be_in_set(status=kept, mostly=0.5)"]
    assert rejects.observed == "4 of 24 rows rejected (16.7%)"

    # the single-file page: every expectation, inline CSS, nothing fetched from elsewhere
    assert result.html == tmp_path / "docs" / "contract.html"
    page = result.html.read_text()
    for name in names:
        assert html.escape(name) in page
    assert "PASSED" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    # the GX Data Docs site, with one validation page per suite
    assert result.docs_index == tmp_path / "docs" / "index.html"
    assert result.docs_index.is_file()
    pages = sorted(p.name for p in (tmp_path / "docs" / "validations").rglob("*.html"))
    assert pages == ["pairflow-all.html", "pairflow-kept.html"]

    report = json.loads(json.dumps(result.to_json_dict()))
    assert report["passed"] is True and report["failed_critical"] == []
    assert report["rows"] == {"kept": 20, "rejected": 4}
    assert len(report["outcomes"]) == len(names)


Mutation = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


def _dup_id(k: pd.DataFrame, r: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    k.loc[5, "id"] = "r0"
    return k, r


def _null_captions(k: pd.DataFrame, r: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    k.loc[[1, 2, 3], "caption"] = None
    return k, r


def _few_rows(k: pd.DataFrame, r: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return k.head(3).copy(), r.head(1).copy()


def _many_rejects(k: pd.DataFrame, r: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return k, _rejected(30)


def _bad_label(k: pd.DataFrame, r: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    k.loc[7, "label"] = "dog"
    return k, r


def _bad_source(k: pd.DataFrame, r: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    k.loc[8, "source"] = "scraped"
    return k, r


@pytest.mark.parametrize(
    ("mutate", "contract", "expected"),
    [
        (
            _dup_id,
            {},
            "expect_column_values_to_be_unique(id) observed 2 rows with a duplicated id "
            "(e.g. 'r0')",
        ),
        (
            _null_captions,
            {"max_null_share": {"id": 0.0, "caption": 0.1}},
            "expect_column_values_to_not_be_null(caption, mostly=0.9) observed 3 nulls (15.0%)",
        ),
        (_few_rows, {}, "expect_table_row_count_to_be_between(min=10) observed 3 rows"),
        (
            _many_rejects,
            {},
            "expect_column_values_to_be_in_set(status=kept, mostly=0.5) observed 30 of 50 rows "
            "rejected (60.0%)",
        ),
        (
            _bad_label,
            {},
            "expect_column_values_to_be_in_set(label) observed 1 value outside the set "
            "(e.g. 'dog')",
        ),
        (
            _bad_source,
            {},
            "expect_column_values_to_be_in_set(source) observed 1 value outside the set "
            "(e.g. 'scraped')",
        ),
    ],
    ids=["duplicate-id", "nulls", "row-count", "reject-share", "label", "source"],
)
def test_each_critical_failure_raises(
    tmp_path: Path, mutate: Mutation, contract: dict[str, Any], expected: str
) -> None:
    kept, rejected = mutate(_kept(), _rejected())
    with pytest.raises(ContractError) as info:
        run_contract(kept, rejected, _cfg(**contract), tmp_path)
    message = str(info.value)
    assert message == f"data contract failed: {expected}"
    assert "\n" not in message
    result = info.value.result
    assert result is not None
    assert not result.passed
    assert len(result.failed_critical()) == 1
    # the docs are written before the step fails, so the UI shows why
    assert result.html.is_file() and "FAILED" in result.html.read_text()
    assert result.docs_index is not None and result.docs_index.is_file()


def test_limits_are_inclusive(tmp_path: Path) -> None:
    """A reject share or null share exactly at its maximum passes (GX ``mostly`` is >=)."""
    kept = _kept(20)
    kept.loc[[0, 1], "caption"] = None  # 10% nulls
    cfg = _cfg(max_reject_share=0.5, max_null_share={"caption": 0.1})
    result = run_contract(kept, _rejected(20), cfg, tmp_path)
    assert result.passed, result.message()


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    kept = _kept(20)
    kept["caption"] = ["a dot"] * 10 + ["x" * 2000] * 2 + ["tiny"] * 8
    result = run_contract(
        kept,
        _rejected(),
        _cfg(caption_chars_mean=(5.0, 100.0), caption_chars_p95_max=500),
        tmp_path,
    )
    assert result.passed
    assert result.failed_critical() == []
    warned = {o.name: o.observed for o in result.failed_warnings()}
    assert warned == {
        "expect_column_mean_to_be_between(caption_chars, min=5, max=100)": "mean=204.1",
        "expect_column_values_to_be_between(caption_chars, max=500, mostly=0.95)": (
            "p95=2000 chars, 10.0% of captions longer than 500"
        ),
    }
    assert "WARN" in result.html.read_text()


@pytest.mark.parametrize("rejected_rows", [0, 5])
def test_zero_kept_rows_is_a_clear_row_count_failure(tmp_path: Path, rejected_rows: int) -> None:
    kept = _kept(0)
    rejected = _rejected(rejected_rows)
    with pytest.raises(
        ContractError,
        match=r"expect_table_row_count_to_be_between\(min=10\) "
        r"observed 0 rows",
    ) as info:
        run_contract(kept, rejected, _cfg(), tmp_path)
    assert info.value.result is not None
    assert info.value.result.rows == {"kept": 0, "rejected": rejected_rows}


def test_no_raise_returns_details(tmp_path: Path) -> None:
    kept = _kept(20)
    kept.loc[5, "id"] = "r0"
    kept.loc[7, "label"] = "dog"
    result = run_contract(kept, _rejected(), _cfg(), tmp_path, raise_on_failure=False)
    assert isinstance(result, ContractResult)
    assert not result.passed
    failed = result.failed_critical()
    assert [o.name for o in failed] == [
        "expect_column_values_to_be_unique(id)",
        "expect_column_values_to_be_in_set(label)",
    ]
    assert failed[0].details["result"]["unexpected_count"] == 2
    assert failed[0].details["result"]["partial_unexpected_list"] == ["r0", "r0"]
    assert failed[1].details["kwargs"]["value_set"] == LABELS
    assert result.message().count(" observed ") == 2
    report = result.to_json_dict()
    assert report["failed_critical"] == [o.name for o in failed]
    json.dumps(report)


def test_missing_column_is_a_critical_failure_not_a_crash(tmp_path: Path) -> None:
    kept = _kept().drop(columns=["image"])
    with pytest.raises(ContractError) as info:
        run_contract(kept, _rejected(), _cfg(), tmp_path)
    assert info.value.result is not None
    (failed,) = info.value.result.failed_critical()
    assert failed.name == "expect_column_values_to_not_be_null(image, mostly=1)"
    assert "does not exist" in failed.observed and "error" in failed.details


def test_label_and_source_sets_are_optional_and_ignore_nulls(tmp_path: Path) -> None:
    kept = _kept()
    kept["label"] = None
    kept["source"] = None
    result = run_contract(kept, _rejected(), _cfg(), tmp_path)
    assert result.passed
    result = run_contract(_kept(), _rejected(), ValidateConfig(), tmp_path)
    assert not any("in_set(label)" in o.name or "in_set(source)" in o.name for o in result.outcomes)


def test_contract_error_is_a_user_facing_error() -> None:
    assert issubclass(ContractError, PairflowError)
    assert ContractError.exit_code == 2


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([7], 7.0), (list(range(1, 21)), 19.0), (list(range(1, 101)), 95.0)],
)
def test_nearest_rank_matches_the_mostly_rule(values: list[int], expected: float | None) -> None:
    assert _nearest_rank(np.array(values, dtype="float64"), 0.95) == expected
