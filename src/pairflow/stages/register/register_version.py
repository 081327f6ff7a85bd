"""Register one pipeline run's model: logged model, lineage, card, version, ``challenger``.

Order of writes, so an outage never leaves a half-made version behind:

1. run-side records (dataset inputs, artifacts, the logged model): harmless if repeated;
2. the version, created in one call with every tag and the card, marked
   ``pairflow.complete=false``;
3. ``challenger`` (only when the gate passed), then ``pairflow.complete=true``.

Each MLflow request is retried by MLflow itself (``mlflow.http_*``). A failure after step 2
deletes the version; if even that fails, the version stays marked incomplete: aliases refuse
it, and the next run of the step for the same KFP run deletes and recreates it. A complete
version for the KFP run id is returned as is (idempotent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from pairflow import tracking
from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.data.split import split_frame
from pairflow.metrics import EvaluateMetrics
from pairflow.models.formats import INDEX_FILE, TABLE_FILE
from pairflow.registry import card
from pairflow.registry.client import Registry
from pairflow.registry.governance import move_alias
from pairflow.registry.logged_model import log_pyfunc, tracking_uri
from pairflow.registry.names import (
    ARTIFACT_ROOT,
    CHALLENGER,
    DRIFT_REFERENCE_ARTIFACT,
    GATE_FAILED,
    GATE_NOT_ENFORCED,
    GATE_PASSED,
    GATE_UNKNOWN,
    METRIC_TAG_PREFIX,
    SERVING_REFERENCE_ARTIFACT,
    TAG_CODE_VERSION,
    TAG_COMPLETE,
    TAG_CONFIG_HASH,
    TAG_DATA_SNAPSHOT,
    TAG_GATE,
    TAG_GATE_REASONS,
    TAG_KFP_RUN_ID,
    TAG_KFP_RUN_NAME,
    TAG_KFP_RUN_URL,
    TAG_MODEL_DIGEST,
    TAG_VARIANT,
    TAG_VARIANT_FORMAT,
)
from pairflow.registry.retry import RegistryError, RegistryUnavailable, first_line
from pairflow.registry.variants import VariantSet, resolve_variants
from pairflow.report import StageReport
from pairflow.stages.register import lineage

log = logging.getLogger("pairflow.registry")
MAX_METRIC_TAGS = 20


def _page_name(path: Path) -> str:
    """Artifact name of a plot file: KFP artifact files have no extension, and evaluate's plot
    artifact is an HTML page (``Input[HTML]``), so a bare name gets ``.html`` (MLflow renders
    it by extension)."""
    return path.name if path.suffix else f"{path.name}.html"


@dataclass(frozen=True)
class RegisterInputs:
    """What the register step reads (its ``run``'s inputs): files, of which everything but
    the manifest and a model is optional; the KFP run (the version's idempotency key) and
    the pipeline's MLflow run the version is logged under (resolve-config's output; empty
    standalone: the run is found or created from the KFP run id)."""

    manifest: Path
    compressed: Path | None = None
    trained: Path | None = None
    evaluate_report: Path | None = None
    stage_reports: list[Path] = field(default_factory=list)
    data_docs: Path | None = None
    drift_html: Path | None = None
    eval_plots: list[Path] = field(default_factory=list)
    drift_reference: Path | None = None
    serving_reference: Path | None = None
    kfp_run_id: str = ""
    kfp_run_name: str = ""
    mlflow_run_id: str = ""


@dataclass
class RegisterResult:
    name: str
    version: str
    run_id: str
    model_id: str
    gate: str
    challenger: bool
    reused: bool
    card: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def deployable_uri(self) -> str:
        """The version's URI when the gate passed (deploy's input), else empty."""
        return self.uri if self.gate == GATE_PASSED else ""


def gate_status(evaluate: StageReport | None) -> tuple[str, list[str]]:
    gate = evaluate.metrics_as(EvaluateMetrics).gate if evaluate is not None else None
    if evaluate is None or gate is None:
        return GATE_UNKNOWN, ["no evaluate report with a gate decision"]
    reasons = list(gate.reasons)
    if not gate.passed:
        return GATE_FAILED, reasons
    if not gate.enforced or not evaluate.implemented:
        return GATE_NOT_ENFORCED, reasons
    return GATE_PASSED, reasons


def _read_reports(paths: list[Path]) -> dict[str, StageReport]:
    found: dict[str, StageReport] = {}
    for p in paths:
        rep = StageReport.read(p)
        found[rep.stage] = rep
    return found


def _labels(frame: pd.DataFrame) -> list[str]:
    if "label" not in frame.columns:
        return []
    return sorted({str(v) for v in frame["label"].dropna()})


def _metric_tags(evaluate: StageReport | None) -> dict[str, str]:
    if evaluate is None or not evaluate.implemented:
        return {}
    rows = card.metric_rows(evaluate.metrics)
    return {
        f"{METRIC_TAG_PREFIX}{name}": card.cell(value) for name, value, _ in rows[:MAX_METRIC_TAGS]
    }


def _standalone_run_id(snapshot: str, variants: VariantSet) -> str:
    # lazy: boto3, botocore, torch (slow to import); only this path needs it
    from pairflow.models.clip import dir_digest

    digest = hashlib.sha256(f"{snapshot}:{dir_digest(variants.chosen.path)}".encode())
    return f"standalone-{digest.hexdigest()[:16]}"


class _Registration:
    def __init__(self, cfg: PairflowConfig, inputs: RegisterInputs) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.name = cfg.register_.model_name
        self.reg = Registry.from_config(cfg.mlflow)

    def existing(self, kfp_run_id: str) -> list[Any]:
        return self.reg.versions(self.name, f"tags.`{TAG_KFP_RUN_ID}` = '{kfp_run_id}'")

    def ensure_model(self) -> None:

        try:
            self.reg.call(
                f"create registered model {self.name}",
                lambda: self.reg.client.create_registered_model(self.name),
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def run_id(self, kfp_run_id: str) -> tuple[str, str]:
        if self.inputs.mlflow_run_id:
            run_id = self.inputs.mlflow_run_id
            run = self.reg.call("get run", lambda: self.reg.client.get_run(run_id))
            return run_id, str(run.info.experiment_id)
        cfg = self.cfg.model_copy(deep=True)
        cfg.mlflow.tracking_uri = self.reg.tracking_uri
        found = self.reg.call(
            "find the pipeline run",
            lambda: tracking.find_pipeline_run(
                cfg.mlflow.tracking_uri, cfg.mlflow.experiment, kfp_run_id
            ),
        )
        run_id = found or self.reg.call(
            "create the pipeline run",
            lambda: tracking.start_pipeline_run(cfg, kfp_run_id, self.inputs.kfp_run_name),
        )
        run = self.reg.call("get run", lambda: self.reg.client.get_run(run_id))
        return run_id, str(run.info.experiment_id)

    def _upload(self, run_id: str, local: Path, artifact: str) -> None:
        """Upload a file under the exact artifact path (KFP names files without suffixes)."""
        dest = str(Path(artifact).parent)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / Path(artifact).name
            shutil.copyfile(local, copy)
            self.reg.call(
                f"upload {artifact}",
                lambda: self.reg.client.log_artifact(run_id, str(copy), dest),
            )

    def _upload_dir(self, run_id: str, local: Path, artifact: str) -> None:
        self.reg.call(
            f"upload {artifact}",
            lambda: self.reg.client.log_artifacts(run_id, str(local), artifact),
        )

    def log_artifacts(
        self, run_id: str, variants: VariantSet, reports: dict[str, StageReport], card_md: str
    ) -> list[str]:
        """Attach the review material to the run; return the artifact paths written."""
        inp, root = self.inputs, ARTIFACT_ROOT
        written: list[str] = []
        for stage, rep in sorted(reports.items()):
            path = f"{root}/reports/{stage}.json"
            self.reg.call(
                f"upload {path}",
                partial(self.reg.client.log_dict, run_id, rep.to_json_dict(), path),
            )
            written.append(path)
        files: list[tuple[Path | None, str]] = [
            (inp.drift_html, f"{root}/drift.html"),
            (inp.drift_reference, DRIFT_REFERENCE_ARTIFACT),
            (inp.serving_reference, SERVING_REFERENCE_ARTIFACT),
        ]
        for p in inp.eval_plots:
            files.append((p, f"{root}/plots" if p.is_dir() else f"{root}/plots/{_page_name(p)}"))
        if variants.index is not None:
            files.append((variants.index, f"{root}/compress/{variants.index.name}"))
            files.append((variants.index.parent / TABLE_FILE, f"{root}/compress/{TABLE_FILE}"))
        dirs: list[tuple[Path | None, str]] = [
            (v.path, f"{root}/variants/{v.name}") for v in variants.others
        ]
        if inp.data_docs is not None and inp.data_docs.is_dir():
            dirs.append((inp.data_docs, f"{root}/data_docs"))
        elif inp.data_docs is not None:
            files.append((inp.data_docs, f"{root}/data_docs.html"))
        for local, artifact in files + dirs:
            if local is None:
                continue
            if not local.exists():
                log.warning("register: %s not found, not attached", local)
                continue
            if local.is_dir():
                self._upload_dir(run_id, local, artifact)
            else:
                self._upload(run_id, local, artifact)
            written.append(artifact)
        card_path = f"{root}/model_card.md"
        self.reg.call(
            f"upload {card_path}",
            lambda: self.reg.client.log_text(run_id, card_md, card_path),
        )
        return [*written, card_path]

    def create_version(
        self, run_id: str, model_id: str, tags: dict[str, str], description: str
    ) -> Any:
        """Create the version; after a failed attempt, look it up before trying again."""
        kfp_run_id = tags[TAG_KFP_RUN_ID]
        url = tags.get(TAG_KFP_RUN_URL) or None

        def attempt() -> Any:
            made = self.existing(kfp_run_id)
            if made:
                return made[-1]
            return self.reg.client.create_model_version(
                self.name,
                source=f"models:/{model_id}",
                run_id=run_id,
                tags=tags,
                run_link=url,
                description=description,
                model_id=model_id,
            )

        return self.reg.call(f"create a version of {self.name}", attempt)

    def delete_versions(self, versions: list[Any], why: str) -> None:
        for mv in versions:
            log.warning("register: deleting %s/%s (%s)", self.name, mv.version, why)
            self.reg.call(
                f"delete {self.name}/{mv.version}",
                partial(self.reg.client.delete_model_version, self.name, str(mv.version)),
            )


def register_model(cfg: PairflowConfig, inputs: RegisterInputs) -> RegisterResult:
    """Register the run's shipping model version (see the module docstring)."""
    job = _Registration(cfg, inputs)
    # MLflow's sqlite registry store resolves logged models through the global tracking URI
    with tracking_uri(job.reg.tracking_uri):
        return _register(job, cfg, inputs)


def _register(job: _Registration, cfg: PairflowConfig, inputs: RegisterInputs) -> RegisterResult:
    frame = read_manifest(inputs.manifest)
    snapshot = lineage.manifest_digest(frame)
    variants = resolve_variants(inputs.compressed, inputs.trained)
    reports = _read_reports(inputs.stage_reports)
    evaluate = StageReport.read(inputs.evaluate_report) if inputs.evaluate_report else None
    if evaluate is not None:
        reports.setdefault(evaluate.stage, evaluate)
    gate, reasons = gate_status(evaluate)
    kfp_run_id = inputs.kfp_run_id or _standalone_run_id(snapshot, variants)

    job.ensure_model()
    previous = job.existing(kfp_run_id)
    complete = [v for v in previous if (v.tags or {}).get(TAG_COMPLETE) == "true"]
    if complete:
        mv = complete[-1]
        log.info(
            "register: %s/%s already registered for KFP run %s", job.name, mv.version, kfp_run_id
        )
        return RegisterResult(
            job.name,
            str(mv.version),
            str(mv.run_id),
            str(getattr(mv, "model_id", "") or ""),
            (mv.tags or {}).get(TAG_GATE, GATE_UNKNOWN),
            CHALLENGER in (job.reg.model_version(job.name, mv.version).aliases or []),
            reused=True,
            card=mv.description or "",
        )
    if previous:
        job.delete_versions(previous, "left incomplete by an earlier attempt")

    run_id, experiment_id = job.run_id(kfp_run_id)
    train, holdout = split_frame(frame, cfg.data.split)
    digests = lineage.log_datasets(
        job.reg,
        run_id,
        {"training": (train, "train"), "evaluation": (holdout, "holdout")},
        source=str(inputs.manifest),
    )
    # lazy: boto3, botocore, torch (slow to import); only this path needs it
    from pairflow.models.clip import dir_digest

    tags = {
        TAG_KFP_RUN_ID: kfp_run_id,
        TAG_KFP_RUN_NAME: inputs.kfp_run_name,
        TAG_KFP_RUN_URL: lineage.kfp_run_url(cfg.register_.kfp_ui_url, inputs.kfp_run_id),
        TAG_DATA_SNAPSHOT: snapshot,
        TAG_CODE_VERSION: lineage.code_version(),
        TAG_CONFIG_HASH: cfg.digest(),
        TAG_GATE: gate,
        TAG_GATE_REASONS: "; ".join(reasons)[:5000],
        TAG_VARIANT: variants.chosen.name,
        TAG_VARIANT_FORMAT: variants.chosen.kind,
        TAG_MODEL_DIGEST: dir_digest(variants.chosen.path),
        "pairflow.dataset.train_digest": digests["train"],
        "pairflow.dataset.holdout_digest": digests["holdout"],
        **_metric_tags(evaluate),
    }
    tags = {k: v for k, v in tags.items() if v}
    planned = _planned_artifacts(inputs, variants, reports)
    lineage_rows = {
        k.removeprefix("pairflow."): v
        for k, v in tags.items()
        if not k.startswith(METRIC_TAG_PREFIX)
    }
    lineage_rows["mlflow_run"] = run_id
    card_md = card.build_model_card(
        card.CardInputs(
            model_name=job.name,
            lineage=lineage_rows,
            reports=reports,
            evaluate=evaluate,
            variants=variants.table(),
            chosen_variant=variants.chosen.name,
            intended_use=cfg.register_.intended_use,
            limitations=cfg.register_.limitations,
            artifacts=planned,
            run_id=run_id,
            experiment_id=experiment_id,
            champion_variant=_champion_variant(job, evaluate),
            latency_budget=variants.selection.get("latency_budget"),
        )
    )
    job.log_artifacts(run_id, variants, reports, card_md)
    model_id = log_pyfunc(
        job.reg, run_id, experiment_id, variants, _labels(frame), {TAG_KFP_RUN_ID: kfp_run_id}
    )
    mv = job.create_version(run_id, model_id, {**tags, TAG_COMPLETE: "false"}, card_md)
    version = str(mv.version)
    try:
        challenger = False
        if gate == GATE_PASSED:
            move_alias(
                job.reg,
                job.name,
                CHALLENGER,
                mv,
                actor=f"register:{kfp_run_id}",
                kind="gate",
                reason=f"gate passed ({'; '.join(reasons) or 'no reasons given'})",
                require_complete=False,
            )
            challenger = True
        job.reg.call(
            f"mark {job.name}/{version} complete",
            lambda: job.reg.client.set_model_version_tag(job.name, version, TAG_COMPLETE, "true"),
        )
    except Exception as exc:
        try:
            job.delete_versions([mv], f"registration failed: {first_line(exc)}")
        except Exception as cleanup:  # noqa: BLE001 - report both failures
            raise RegistryUnavailable(
                f"models:/{job.name}/{version}: registration failed ({first_line(exc)}) and the "
                f"incomplete version could not be deleted ({first_line(cleanup)}); it is marked "
                f"{TAG_COMPLETE}=false, refused by promote, and replaced by the next attempt"
            ) from exc
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"models:/{job.name}: registration failed ({first_line(exc)})") from exc
    log.info(
        "register: %s (gate %s, challenger %s, run %s)",
        f"models:/{job.name}/{version}",
        gate,
        challenger,
        run_id,
    )
    return RegisterResult(job.name, version, run_id, model_id, gate, challenger, False, card_md)


def _champion_variant(job: _Registration, evaluate: StageReport | None) -> dict[str, Any] | None:
    """The champion's shipped variant row (size, latency) from its run's variant index, or None
    when there is no champion or it was registered without one (the card says so)."""
    champion = evaluate.metrics_as(EvaluateMetrics).champion if evaluate is not None else None
    run_id = champion.run_id if champion is not None else None
    if champion is None or not run_id:
        return None

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = job.reg.call(
                "download the champion's variant index",
                lambda: job.reg.client.download_artifacts(
                    run_id, f"{ARTIFACT_ROOT}/compress/{INDEX_FILE}", tmp
                ),
            )
        except (MlflowException, OSError) as exc:
            log.info("register: champion run %s has no variant index (%s)", run_id, exc)
            return None
        data = json.loads(Path(local).read_text())
    chosen = next(
        (v for v in data.get("variants", []) if v.get("name") == data.get("chosen")), None
    )
    if chosen is None:
        return None
    row: dict[str, Any] = {"variant": f"v{champion.version} {chosen['name']}"}
    metrics = chosen.get("metrics") or {}
    row.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    for batch, lat in (metrics.get("latency_ms") or {}).items():
        row[f"p50_ms_b{batch}"] = lat.get("p50_ms")
    return row


def _planned_artifacts(
    inputs: RegisterInputs, variants: VariantSet, reports: dict[str, StageReport]
) -> list[str]:
    """The artifact paths :meth:`_Registration.log_artifacts` will write (for the card)."""
    root = ARTIFACT_ROOT
    out = [f"{root}/reports/{stage}.json" for stage in sorted(reports)]
    if inputs.drift_html is not None:
        out.append(f"{root}/drift.html")
    if inputs.drift_reference is not None:
        out.append(DRIFT_REFERENCE_ARTIFACT)
    if inputs.serving_reference is not None:
        out.append(SERVING_REFERENCE_ARTIFACT)
    out += [
        f"{root}/plots" if p.is_dir() else f"{root}/plots/{_page_name(p)}"
        for p in inputs.eval_plots
    ]
    if variants.index is not None:
        out += [f"{root}/compress/{variants.index.name}", f"{root}/compress/{TABLE_FILE}"]
    out += [f"{root}/variants/{v.name}" for v in variants.others]
    if inputs.data_docs is not None:
        docs = "data_docs" if inputs.data_docs.is_dir() else "data_docs.html"
        out.append(f"{root}/{docs} (Great Expectations Data Docs)")
    return [*out, f"{root}/model_card.md"]
