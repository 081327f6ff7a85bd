"""Dataset-level data contract: a Great Expectations 1.x suite built from the config.

The contract runs once on all validated rows together (``kept`` plus ``rejected``), in an
ephemeral GX context, and writes two kinds of output into ``docs_dir``:

- a GX Data Docs site (``index.html`` + ``validations/`` + ``static/``), and
- ``contract.html``: one self-contained page (inline CSS, no scripts, no external links) with
  every expectation, its severity and observed value. KFP HTML artifacts are a single file, so
  this is the page to hand to the Kubeflow UI; the GX pages load CSS/JS from CDNs and from
  ``static/`` next to them.

Critical expectations (any failure fails the step with :class:`ContractError`):

- ``expect_table_row_count_to_be_between``: at least ``contract.min_rows`` kept rows;
- ``expect_column_values_to_be_unique(id)`` among kept rows;
- ``expect_column_values_to_not_be_null(col)`` for each ``contract.max_null_share`` column,
  ``mostly = 1 - share``;
- ``expect_column_values_to_be_in_set(label)`` when ``validate.allowed_labels`` is set and
  ``(source)`` when ``contract.allowed_sources`` is set (nulls are left to the null shares);
- ``expect_column_values_to_be_in_set(status=kept)`` on kept + rejected, with
  ``mostly = 1 - contract.max_reject_share``: the reject share.

Warnings (reported, shown in the docs, never fail the step): caption length mean within
``contract.caption_chars_mean`` and 95th percentile at most ``contract.caption_chars_p95_max``.
The p95 bound is expressed as ``expect_column_values_to_be_between(caption_chars,
max_value=p95_max, mostly=0.95)`` (equivalent: at least 95% of captions are no longer than the
bound), because GX 1.24's ``expect_column_quantile_values_to_be_between`` returns a numpy bool
that its own validation-results store cannot serialise under numpy 2.

GX is imported lazily (about 3 s the first time in a process). Each run uses a fresh in-memory
context that has only one Data Docs site, in ``docs_dir``. Rebuilding that site deletes GX
pages in ``docs_dir`` that the current run did not produce.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pairflow.config import ValidateConfig
from pairflow.errors import PairflowError

if TYPE_CHECKING:
    from great_expectations.data_context.data_context.ephemeral_data_context import (
        EphemeralDataContext,
    )
    from great_expectations.expectations.expectation import Expectation

SUITE_KEPT = "pairflow_contract"
SUITE_ALL = "pairflow_reject_share"
DOCS_SITE = "pairflow"
HTML_NAME = "contract.html"
CAPTION_CHARS = "caption_chars"
_META_KEY = "pairflow_outcome"
_SAMPLES = 5


class ContractError(PairflowError):
    """A critical data-contract expectation failed; the message names each one."""

    def __init__(self, message: str, result: ContractResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result, reduced to what a log line and a report need."""

    name: str
    success: bool
    critical: bool
    observed: str
    details: dict[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "critical": self.critical,
            "observed": self.observed,
            "details": self.details,
        }


@dataclass(frozen=True)
class ContractResult:
    """All outcomes; ``passed`` means every critical expectation held."""

    passed: bool
    outcomes: list[ExpectationOutcome]
    docs_index: Path | None
    html: Path
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)

    def failed_critical(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.critical and not o.success]

    def failed_warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.critical and not o.success]

    def message(self) -> str:
        """One line naming each failed critical expectation and its observed value."""
        failed = "; ".join(f"{o.name} observed {o.observed}" for o in self.failed_critical())
        return f"data contract failed: {failed}" if failed else "data contract passed"

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed_critical": [o.name for o in self.failed_critical()],
            "failed_warnings": [o.name for o in self.failed_warnings()],
            "outcomes": [o.to_json_dict() for o in self.outcomes],
            "docs_index": None if self.docs_index is None else str(self.docs_index),
            "html": str(self.html),
            "seconds": round(self.seconds, 3),
            "rows": dict(self.rows),
        }


# ---------------------------------------------------------------------------------------------
# the suite, built from config


Observe = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class _Spec:
    name: str
    critical: bool
    frame: str  # "kept" (kept rows) or "all" (kept + rejected, one status column)
    expectation: Expectation
    observe: Observe


def _num(x: float) -> str:
    return f"{x:g}"


def _mostly(share: float) -> float:
    """``1 - share``, rounded so that a share exactly at the limit passes (GX tests ``>=``)."""
    return round(1.0 - share, 9)


def _pct(res: dict[str, Any]) -> str:
    """Unexpected share of the values GX judged (nulls are not judged, except by not-null)."""
    count = int(res.get("unexpected_count") or 0)
    total = int(res.get("element_count") or 0) - int(res.get("missing_count") or 0)
    return f"{count / total:.1%}" if total else "n/a"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _samples(res: dict[str, Any]) -> str:
    values = list(dict.fromkeys(repr(v) for v in res.get("partial_unexpected_list") or []))
    return f" (e.g. {', '.join(values[:_SAMPLES])})" if values else ""


def _obs_rows(res: dict[str, Any]) -> str:
    return f"{res.get('observed_value')} rows"


def _obs_unique(res: dict[str, Any]) -> str:
    count = int(res.get("unexpected_count") or 0)
    return f"{_n(count, 'row')} with a duplicated id{_samples(res)}"


def _obs_nulls(res: dict[str, Any]) -> str:
    count = int(res.get("unexpected_count") or 0)
    return f"{_n(count, 'null')} ({_pct(res)})"


def _obs_in_set(res: dict[str, Any]) -> str:
    count = int(res.get("unexpected_count") or 0)
    return f"{_n(count, 'value')} outside the set{_samples(res)}"


def _obs_rejects(res: dict[str, Any]) -> str:
    count = int(res.get("unexpected_count") or 0)
    total = int(res.get("element_count") or 0)
    return f"{count} of {_n(total, 'row')} rejected ({_pct(res)})"


def _obs_mean(res: dict[str, Any]) -> str:
    value = res.get("observed_value")
    return "mean=n/a (no captions)" if value is None else f"mean={float(value):.1f}"


def _suite_specs(cfg: ValidateConfig, p95: float | None) -> list[_Spec]:
    """The contract's expectations, in report order (fresh instances on every call)."""
    # The public names are gx.expectations.<Class>; they are imported from their defining
    # modules because GX declares no __all__ and mypy --strict rejects implicit re-exports.
    # lazy: great_expectations (slow to import); only this path needs it
    from great_expectations.expectations.core.expect_column_mean_to_be_between import (
        ExpectColumnMeanToBeBetween,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
        ExpectColumnValuesToBeInSet,
    )
    from great_expectations.expectations.core.expect_column_values_to_be_unique import (
        ExpectColumnValuesToBeUnique,
    )
    from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
        ExpectColumnValuesToNotBeNull,
    )
    from great_expectations.expectations.core.expect_table_row_count_to_be_between import (
        ExpectTableRowCountToBeBetween,
    )
    from great_expectations.expectations.metadata_types import FailureSeverity

    c = cfg.contract
    specs = [
        _Spec(
            f"expect_table_row_count_to_be_between(min={c.min_rows})",
            True,
            "kept",
            ExpectTableRowCountToBeBetween(min_value=c.min_rows),
            _obs_rows,
        ),
        _Spec(
            "expect_column_values_to_be_unique(id)",
            True,
            "kept",
            ExpectColumnValuesToBeUnique(column="id"),
            _obs_unique,
        ),
    ]
    for col, share in c.max_null_share.items():
        mostly = _mostly(share)
        specs.append(
            _Spec(
                f"expect_column_values_to_not_be_null({col}, mostly={_num(mostly)})",
                True,
                "kept",
                ExpectColumnValuesToNotBeNull(column=col, mostly=mostly),
                _obs_nulls,
            )
        )
    for col, allowed in (("label", cfg.allowed_labels), ("source", c.allowed_sources)):
        if allowed is not None:
            specs.append(
                _Spec(
                    f"expect_column_values_to_be_in_set({col})",
                    True,
                    "kept",
                    ExpectColumnValuesToBeInSet(column=col, value_set=list(allowed)),
                    _obs_in_set,
                )
            )
    mostly = _mostly(c.max_reject_share)
    specs.append(
        _Spec(
            f"expect_column_values_to_be_in_set(status=kept, mostly={_num(mostly)})",
            True,
            "all",
            ExpectColumnValuesToBeInSet(column="status", value_set=["kept"], mostly=mostly),
            _obs_rejects,
        )
    )
    lo, hi = c.caption_chars_mean
    p95_max = c.caption_chars_p95_max
    warn = FailureSeverity.WARNING

    def obs_p95(res: dict[str, Any]) -> str:
        head = "p95=n/a (no captions)" if p95 is None else f"p95={p95:g} chars"
        return f"{head}, {_pct(res)} of captions longer than {_num(p95_max)}"

    specs += [
        _Spec(
            f"expect_column_mean_to_be_between({CAPTION_CHARS}, min={_num(lo)}, max={_num(hi)})",
            False,
            "kept",
            ExpectColumnMeanToBeBetween(
                column=CAPTION_CHARS, min_value=lo, max_value=hi, severity=warn
            ),
            _obs_mean,
        ),
        _Spec(
            f"expect_column_values_to_be_between({CAPTION_CHARS}, max={_num(p95_max)}, "
            "mostly=0.95)",
            False,
            "kept",
            ExpectColumnValuesToBeBetween(
                column=CAPTION_CHARS, max_value=p95_max, mostly=0.95, severity=warn
            ),
            obs_p95,
        ),
    ]
    return specs


# ---------------------------------------------------------------------------------------------
# running it


def _caption_chars(kept: pd.DataFrame) -> pd.Series:
    if "caption" not in kept.columns:
        return pd.Series(np.full(len(kept), np.nan), dtype="float64")
    lengths = pd.Series(kept["caption"].to_numpy(), dtype="string").str.len()
    return pd.Series(lengths.to_numpy(dtype="float64", na_value=np.nan))


def _nearest_rank(values: np.ndarray[Any, Any], q: float) -> float | None:
    """The nearest-rank quantile: the value with at least ``q`` of all values at or below it.

    This is the quantile that ``expect_column_values_to_be_between(max_value=M, mostly=q)``
    bounds, so the reported p95 agrees with the expectation's verdict.
    """
    if not len(values):
        return None
    rank = max(1, math.ceil(round(q * len(values), 9)))
    return float(np.partition(values, rank - 1)[rank - 1])


def _frames(
    kept: pd.DataFrame, rejected: pd.DataFrame, cfg: ValidateConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slim copies holding only the columns the suite reads (GX never sees extra columns)."""
    wanted = ["id", "label", "source", *cfg.contract.max_null_share]
    cols = [c for c in dict.fromkeys(wanted) if c in kept.columns]
    slim = kept[cols].reset_index(drop=True)
    slim[CAPTION_CHARS] = _caption_chars(kept)
    status = ["kept"] * len(kept) + ["rejected"] * len(rejected)
    return slim, pd.DataFrame({"status": pd.Series(status, dtype="object")})


def _context(docs_dir: Path) -> EphemeralDataContext:
    """An in-memory GX context whose only Data Docs site is ``docs_dir``; no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # lazy: great_expectations (slow to import); only this path needs it
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={DOCS_SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _jsonable(value: Any) -> Any:
    """Plain-JSON copy of a GX result (numpy scalars, NaN and odd keys included)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_contract(
    kept: pd.DataFrame,
    rejected: pd.DataFrame,
    cfg: ValidateConfig,
    docs_dir: Path,
    *,
    raise_on_failure: bool = True,
) -> ContractResult:
    """Validate ``kept``/``rejected`` against the contract; write Data Docs and ``contract.html``.

    Raises :class:`ContractError` (after writing the docs) when a critical expectation fails
    and ``raise_on_failure`` is true.
    """
    started = time.perf_counter()
    # lazy: great_expectations (slow to import); only this path needs it
    import great_expectations as gx

    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    slim_kept, status = _frames(kept, rejected, cfg)
    p95 = _nearest_rank(slim_kept[CAPTION_CHARS].dropna().to_numpy(), 0.95)
    specs = _suite_specs(cfg, p95)

    context = _context(docs_dir)
    source = context.data_sources.add_pandas("pairflow")
    run_id = gx.RunIdentifier(run_name="pairflow-contract")
    frames = {"kept": slim_kept, "all": status}
    suites = {"kept": SUITE_KEPT, "all": SUITE_ALL}
    raw: dict[str, tuple[bool, dict[str, Any], str | None]] = {}  # name -> success, details, error
    for key, frame in frames.items():
        suite = context.suites.add(gx.ExpectationSuite(name=suites[key]))
        for spec in specs:
            if spec.frame == key:
                spec.expectation.meta = {_META_KEY: spec.name}
                suite.add_expectation(spec.expectation)
        batch = source.add_dataframe_asset(key).add_batch_definition_whole_dataframe(key)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suites[key], data=batch, suite=suite)
        )
        results = definition.run(
            batch_parameters={"dataframe": frame}, result_format="SUMMARY", run_id=run_id
        )
        for item in results.results:
            config = item.expectation_config
            name = str(((config.meta if config else None) or {}).get(_META_KEY))
            error = _exception_message(item.exception_info or {})
            kwargs = {k: v for k, v in (config.kwargs if config else {}).items() if k != "batch_id"}
            found = {"result": _jsonable(dict(item.result)), "kwargs": _jsonable(kwargs)}
            raw[name] = (bool(item.success), found, error)

    built = context.build_data_docs(site_names=[DOCS_SITE])
    docs_index = (docs_dir / "index.html") if built else None

    outcomes = []
    for spec in specs:
        success, found, error = raw.get(spec.name, (False, {}, "expectation did not run"))
        observed = f"error: {error}" if error else spec.observe(found.get("result") or {})
        details: dict[str, Any] = {"frame": spec.frame, **found}
        if error:
            details["error"] = error
        outcomes.append(
            ExpectationOutcome(
                name=spec.name,
                success=success and not error,
                critical=spec.critical,
                observed=" ".join(observed.split()),
                details=details,
            )
        )
    passed = all(o.success for o in outcomes if o.critical)
    page = docs_dir / HTML_NAME
    rows = {"kept": len(kept), "rejected": len(rejected)}
    result = ContractResult(
        passed=passed,
        outcomes=outcomes,
        docs_index=docs_index,
        html=page,
        seconds=time.perf_counter() - started,
        rows=rows,
    )
    page.write_text(render_html(result), encoding="utf-8")
    if not passed and raise_on_failure:
        raise ContractError(result.message(), result)
    return result


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX reports exceptions either flat or keyed by metric; return the first message."""
    if info.get("raised_exception"):
        return _strip_error(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return _strip_error(value.get("exception_message"))
    return None


def _strip_error(message: object) -> str:
    text = str(message or "exception")
    return text.removeprefix("Error: ")


# ---------------------------------------------------------------------------------------------
# the single-file HTML artifact

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .3rem}
p.sum{margin:.2rem 0 1rem;color:#555}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.4rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}
code{font-size:.85rem}
pre{white-space:pre-wrap;font-size:.8rem;margin:.3rem 0 0;max-height:20rem;overflow:auto}
.b{display:inline-block;padding:.1rem .45rem;border-radius:.25rem;color:#fff;font-weight:600}
.pass{background:#2e7d32}.fail{background:#c62828}.warn{background:#ef6c00}
"""


def render_html(result: ContractResult) -> str:
    """One self-contained HTML page (inline CSS, no scripts, no links) of every outcome."""
    verdict = "PASSED" if result.passed else "FAILED"
    crit = len(result.failed_critical())
    warn = len(result.failed_warnings())
    rows_line = ", ".join(f"{v} {k}" for k, v in result.rows.items())
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data contract {verdict}</title><style>{_CSS}</style></head><body>",
        f'<h1>Data contract <span class="b {"pass" if result.passed else "fail"}">'
        f"{verdict}</span></h1>",
        f'<p class="sum">{html.escape(rows_line)} rows; {len(result.outcomes)} expectations: '
        f"{crit} critical failed, {_n(warn, 'warning')}. The full Great Expectations Data Docs "
        f"site is written next to the contract page (<code>{DOCS_SITE}</code> site, "
        "<code>index.html</code>).</p>",
        "<table><thead><tr><th>status</th><th>severity</th><th>expectation</th>"
        "<th>observed</th></tr></thead><tbody>",
    ]
    for o in result.outcomes:
        if o.success:
            badge = '<span class="b pass">PASS</span>'
        elif o.critical:
            badge = '<span class="b fail">FAIL</span>'
        else:
            badge = '<span class="b warn">WARN</span>'
        details = html.escape(json.dumps(o.details, indent=1, sort_keys=True, default=str))
        lines.append(
            f"<tr><td>{badge}</td><td>{'critical' if o.critical else 'warning'}</td>"
            f"<td><code>{html.escape(o.name)}</code></td><td>{html.escape(o.observed)}"
            f"<details><summary>details</summary><pre>{details}</pre></details></td></tr>"
        )
    lines.append("</tbody></table></body></html>")
    return "\n".join(lines) + "\n"
