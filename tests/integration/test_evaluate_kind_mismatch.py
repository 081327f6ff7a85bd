"""``train.model`` switched between runs: candidate and champion of different model kinds.

Real artifacts saved exactly as the train stage saves them (``save_trained``: a CLIP and a
``concat`` classifier on the same tiny towers) and a plain CLIP directory (no pairflow
metadata, like a base or filter model), evaluated with :func:`evaluate_frame` against an
explicitly given champion. The gate refuses a change of kind with a reason naming both kinds,
after comparing the metrics both kinds support (the towers' retrieval recall); the
classifier-only metrics are measured for the candidate but never compared across kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from pairflow.config import load_config
from pairflow.demo.synthetic import generate_dataset
from pairflow.models.heads import build_head
from pairflow.models.open import open_model
from pairflow.models.scratch import save_untrained_clip
from pairflow.models.trained import save_trained
from pairflow.stages.evaluate.run import EvaluateResult, evaluate_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kind-mismatch")
    gen = generate_dataset(root / "data", 60, seed=13, defects=False)
    df = pd.read_parquet(gen.manifest)
    df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
    base = save_untrained_clip(root / "base", df["caption"].tolist())
    clip = open_model(base).clip
    labels = sorted(df["label"].unique())
    torch.manual_seed(0)
    head = build_head(clip.model, "concat", len(labels))
    classifier = save_trained(
        root / "classifier", clip.model, clip.processor, kind="classifier", labels=labels, head=head
    )
    clip_art = save_trained(root / "clip", clip.model, clip.processor, kind="clip")
    return {"root": root, "df": df, "classifier": classifier, "clip": clip_art, "base": base}


def _evaluate(arts: dict[str, Any], candidate: Path, champion: Path, tag: str) -> EvaluateResult:
    root: Path = arts["root"]
    cfg = load_config(
        None,
        [
            f"run.workdir={root}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            "data.split.holdout_fraction=0.4",
            "evaluate.bootstrap_samples=200",
        ],
    )
    return evaluate_frame(
        arts["df"],
        str(candidate),
        cfg,
        drift_html=root / f"drift-{tag}.html",
        reference_out=root / f"reference-{tag}.parquet",
        champion=str(champion),
    )


def _kind_check(result: EvaluateResult) -> dict[str, Any]:
    (check,) = [c for c in result.gate.checks if c["check"] == "model_kind"]
    return check


@pytest.mark.parametrize(
    ("candidate", "champion"),
    [("classifier", "clip"), ("clip", "classifier"), ("classifier", "base")],
    ids=["classifier-vs-clip-champion", "clip-vs-classifier-champion", "classifier-vs-plain"],
)
def test_change_of_kind_is_refused_after_comparing_shared_metrics(
    arts: dict[str, Any], candidate: str, champion: str
) -> None:
    result = _evaluate(arts, arts[candidate], arts[champion], f"{candidate}-{champion}")
    cand_kind = "classifier" if candidate == "classifier" else "clip"
    champ_kind = "classifier" if champion == "classifier" else "clip"
    assert result.kind == cand_kind
    check = _kind_check(result)
    assert check["candidate"] == cand_kind and check["champion"] == champ_kind
    assert check["passed"] is False and result.gate.passed is False
    refusal = [r for r in result.gate.reasons if r.startswith("FAIL model kind")]
    assert len(refusal) == 1
    assert f"candidate is a {cand_kind}" in refusal[0] and f"is a {champ_kind}" in refusal[0]
    assert "register.model_name" in refusal[0]
    # compared on what both kinds support: the towers' retrieval recall, never accuracy
    compared = {c.metric for c in result.comparisons}
    assert compared == {"i2t_recall_at_1", "t2i_recall_at_1"}
    assert result.champion is not None and "accuracy" not in result.champion.scalars
    if cand_kind == "classifier":
        # the candidate's own classification figures are still measured and reported
        for metric in ("accuracy", "macro_f1", "ece"):
            assert metric in result.candidate.scalars, metric
        assert result.candidate.confusion is not None
        assert result.candidate.confusion_source == "classifier"
    metrics = result.report_metrics()
    assert metrics["gate"]["passed"] is False
    assert any(c["check"] == "model_kind" for c in metrics["gate"]["checks"])


def test_same_kind_records_a_passing_kind_check(arts: dict[str, Any]) -> None:
    result = _evaluate(arts, arts["classifier"], arts["classifier"], "same")
    check = _kind_check(result)
    assert check == {
        "check": "model_kind",
        "candidate": "classifier",
        "champion": "classifier",
        "passed": True,
    }
    assert not any(r.startswith("FAIL model kind") for r in result.gate.reasons)
    # classifier vs classifier: accuracy is compared as well
    assert "accuracy" in {c.metric for c in result.comparisons}
