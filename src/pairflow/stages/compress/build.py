"""Build every variant of a trained CLIP, measure them side by side, pick the one that ships.

Order: fp32 torch (the input, copied) -> fp32 ONNX (export + parity on held-out rows, else
:class:`ParityError`) -> int8 ONNX (dynamic, both towers) -> int8 ONNX with a static vision
tower (calibrated images) -> student fp32 / student int8 (``distill``) -> recall@1 of each on
the held-out rows -> interleaved latency -> selection -> ``variants.json`` + ``variants.md``.
The directory layout is described in :mod:`pairflow.models.variants`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from pairflow.config import S3Config, SplitConfig
from pairflow.data.split import split_frame
from pairflow.errors import InputDataError
from pairflow.models import classifier as cl
from pairflow.models import export as ex
from pairflow.models.clip import save_clip
from pairflow.models.errors import CalibrationError, CompressError, ModelLoadError
from pairflow.models.formats import FUSION_HEAD_FILE, META_FILE, TABLE_FILE, TEXT_FILE, VISION_FILE
from pairflow.models.latency import HeldOut, embed_all, load_held_out, measure_saved_latency
from pairflow.models.latency import recall_at_1 as recall
from pairflow.models.locate import locate_model
from pairflow.models.open import open_model
from pairflow.models.runners import OrtClip, TorchClip
from pairflow.models.towers import count_parameters
from pairflow.models.trained import read_meta, save_trained
from pairflow.models.variants import VariantIndex, VariantRecord, open_variant
from pairflow.stages.compress import distill as kd
from pairflow.stages.compress import quantize as qz
from pairflow.stages.compress.select import (
    BASELINE,
    choose_variant,
    delta_name,
    enforce_latency_budget,
)
from pairflow.stages.compress.settings import CompressConfig
from pairflow.stages.compress.table import variants_markdown

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

    from pairflow.models.clip import LoadedClip
    from pairflow.models.heads import FusionHead
    from pairflow.models.trained import TrainedModel

log = logging.getLogger("pairflow.stages.compress.build")

Progress = Callable[[str], None]

DESCRIPTIONS = {
    "fp32_torch": "the trained model, torch eager fp32",
    "fp32_onnx": "ONNX export, ONNX Runtime fp32",
    "int8_onnx": "ONNX Runtime, dynamic int8 weights (both towers)",
    "int8_static_onnx": "ONNX Runtime, static int8 vision tower (calibrated) + dynamic text",
    "student_fp32": "distilled student, torch eager fp32",
    "student_int8": "distilled student, ONNX Runtime dynamic int8",
}


@dataclass
class CompressResult:
    index: VariantIndex
    table: str
    held_out_rows: int
    calibration_rows: int
    distill: dict[str, Any] | None
    latency_setup: dict[str, Any] | None = None


def _size(directory: Path, files: list[str]) -> int:
    return sum((directory / f).stat().st_size for f in files)


def _model_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".safetensors", ".onnx"))


def _save_processor(processor: CLIPProcessor, directory: Path) -> None:
    processor.save_pretrained(directory)
    processor.image_processor.save_pretrained(directory)


def _copy_model_dir(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=False)


def _export_checked(
    model: CLIPModel,
    processor: CLIPProcessor,
    directory: Path,
    held: HeldOut,
    cfg: CompressConfig,
    what: str,
    classifier: Classifier | None = None,
) -> dict[str, Any]:
    """Export ``model``'s towers (and a classifier's head) into ``directory``; check parity
    on held-out rows: embedding cosine per tower, and for a classifier identical argmax and
    close logits (:class:`ParityError` otherwise)."""
    pixels, ids, mask = held.batches[0]
    if classifier is None:
        files = ex.export_towers(
            model,
            directory,
            torch.from_numpy(pixels),
            torch.from_numpy(ids),
            torch.from_numpy(mask),
        )
        vision, text = files.vision, files.text
    else:
        cl.export_classifier(model, classifier.head, classifier.spec, directory, held.batches[0])
        vision, text = directory / VISION_FILE, directory / TEXT_FILE
    _save_processor(processor, directory)
    onnx = OrtClip(vision, text)
    parity: dict[str, Any] = ex.check_parity(
        TorchClip(model), onnx, held.batches, cfg.parity_min_cosine, what
    ).to_dict()
    if classifier is not None:
        ort_cls = cl.OrtClassifier(directory)
        parity |= cl.check_logit_parity(
            classifier.runner, ort_cls, held.batches, cfg.parity_logit_tolerance, what
        ).to_dict()
    log.info("%s: ONNX parity %s", what, parity)
    return parity


def _quantize_dynamic_dir(src: Path, dst: Path, cfg: CompressConfig) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.suffix == ".onnx":  # vision, text and a classifier's head
            qz.quantize_dynamic_file(f, dst / f.name, cfg.int8_op_types, cfg.per_channel)
        elif f.is_file():  # processor files, classifier.json
            shutil.copyfile(f, dst / f.name)


def calibration_pixels(
    cal_rows: pd.DataFrame,
    processor: CLIPProcessor,
    max_length: int,
    size: int,
    s3: S3Config | None,
    source: str,
) -> list[Any]:
    """Pixel batches of up to ``size`` calibration images; :class:`CalibrationError` if none."""
    if cal_rows.empty:
        raise CalibrationError(
            f"static int8 calibration set is empty: no {source} rows "
            f"(compress.calibration_source={source!r})"
        )
    held = load_held_out(cal_rows, processor, max_length, max_rows=size, s3=s3, batch_size=16)
    if held.rows == 0:
        raise CalibrationError(
            f"static int8 calibration set is empty: none of the {min(size, len(cal_rows))} "
            f"{source} calibration images could be read"
        )
    return held.pixels()


@dataclass
class Classifier:
    """The classifier parts of a trained-model artifact (``pairflow.stages.train``)."""

    spec: cl.ClassifierSpec
    head: FusionHead
    runner: cl.TorchClassifier
    trained: TrainedModel


_WEIGHT_FILES = ("model.safetensors", FUSION_HEAD_FILE)


def load_source(model_dir: str | Path, s3: S3Config | None) -> tuple[LoadedClip, Classifier | None]:
    """The torch CLIP and, for a classifier artifact, its head (``open_model(variant="torch")``).

    Anything compress would not carry into every variant is refused before loading: an
    unknown model kind or fusion head, or weight files besides the CLIP's and the fusion
    head's.
    """
    loc = locate_model(model_dir, variant="torch", s3=s3)
    if not isinstance(loc.path, Path):
        raise CompressError(f"{model_dir}: compress needs a model directory")
    extra = sorted(
        p.name
        for p in loc.path.iterdir()
        if p.suffix in (".safetensors", ".bin", ".pt", ".onnx")
        and p.name not in _WEIGHT_FILES
        and not p.name.startswith("model-")
    )
    if extra:
        raise CompressError(
            f"{model_dir}: unknown weight files {extra}; compress would not carry them into "
            "the variants"
        )
    if (loc.path / META_FILE).is_file():  # a trained artifact, else a plain CLIP directory
        try:
            meta = read_meta(loc.path, str(model_dir))
        except ModelLoadError as exc:
            raise CompressError(f"cannot compress: {exc}") from exc
        if meta["kind"] == "classifier":
            cl.check_fusion(str((meta.get("fusion") or {}).get("kind", "")), str(model_dir))
    opened = open_model(loc)
    trained = opened.trained
    if trained is None or trained.kind == "clip":
        return opened.clip, None
    if trained.head is None or not trained.labels:
        raise CompressError(f"{model_dir}: classifier artifact without head or labels")
    spec = cl.ClassifierSpec(list(trained.labels), trained.head.kind)
    return trained.clip, Classifier(spec, trained.head, cl.TorchClassifier(trained), trained)


CHAMPION_KEY = "_champion"  # the champion's variant among the timed ones (never a variant name)


def compress_model(
    model_dir: str | Path,
    frame: pd.DataFrame,
    cfg: CompressConfig,
    out_dir: str | Path,
    *,
    split: SplitConfig,
    s3: S3Config | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    champion: tuple[Path, str] | None = None,
) -> CompressResult:
    """Write all variants of the CLIP or classifier in ``model_dir`` into ``out_dir`` and
    choose one (classifiers: accuracy instead of recall@1). ``champion``: the champion's
    shipped variant (folder, kind), timed interleaved with the variants for the latency
    budget (``compress.max_slowdown_vs_champion``)."""
    say = progress or (lambda msg: log.info("%s", msg))
    loaded, classifier = load_source(model_dir, s3)
    assert loaded.path is not None
    model, processor = loaded.model, loaded.processor
    model.train(False)
    max_len = loaded.max_text_length
    train_rows, held_rows = split_frame(frame, split)
    if held_rows.empty:
        raise InputDataError(
            f"no held-out rows among {len(frame)} (data.split.holdout_fraction="
            f"{split.holdout_fraction}): compress measures recall and parity on them"
        )
    held = load_held_out(held_rows, processor, max_len, max_rows=cfg.eval_max_rows, s3=s3)
    if held.rows < 2:
        raise InputDataError(f"only {held.rows} readable held-out rows: recall@1 needs at least 2")
    targets = (
        cl.label_targets(held.ids, held_rows, classifier.spec.labels, "held-out rows")
        if classifier is not None
        else None
    )
    metric_name = "accuracy" if classifier is not None else "recall_at_1"
    say(f"held-out rows: {held.rows} ({held.failed} unreadable)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():  # a rerun replaces earlier variants
        shutil.rmtree(child) if child.is_dir() else child.unlink()

    kinds: dict[str, str] = {}
    params: dict[str, int] = {}
    extra: dict[str, dict[str, Any]] = {}
    head_params = count_parameters(classifier.head) if classifier is not None else 0
    teacher_params = count_parameters(model) + head_params

    _copy_model_dir(loaded.path, out / "fp32_torch")
    kinds["fp32_torch"], params["fp32_torch"] = "torch", teacher_params

    say("exporting fp32 ONNX" + (" towers and classifier head" if classifier else " towers"))
    parity = _export_checked(
        model, processor, out / "fp32_onnx", held, cfg, str(model_dir), classifier
    )
    kinds["fp32_onnx"], params["fp32_onnx"] = "onnx", teacher_params
    extra["fp32_onnx"] = {"parity": parity}

    calibration_rows = 0
    if cfg.int8:
        say("int8: dynamic quantization")
        _quantize_dynamic_dir(out / "fp32_onnx", out / "int8_onnx", cfg)
        kinds["int8_onnx"], params["int8_onnx"] = "onnx", teacher_params
        if cfg.static_vision:
            say("int8: static quantization of the vision tower")
            cal_frame = held_rows if cfg.calibration_source == "holdout" else train_rows
            cal = calibration_pixels(
                cal_frame, processor, max_len, cfg.calibration_size, s3, cfg.calibration_source
            )
            calibration_rows = sum(len(b) for b in cal)
            dst = out / "int8_static_onnx"
            qz.quantize_static_vision(
                out / "fp32_onnx" / VISION_FILE,
                dst / VISION_FILE,
                cal,
                cfg.int8_op_types,
                cfg.per_channel,
                what=f"{model_dir} vision tower",
            )
            for f in (out / "int8_onnx").iterdir():
                if f.name != VISION_FILE:
                    shutil.copyfile(f, dst / f.name)
            kinds["int8_static_onnx"], params["int8_static_onnx"] = "onnx", teacher_params
            extra["int8_static_onnx"] = {"calibration_rows": calibration_rows}

    distill_info: dict[str, Any] | None = None
    if cfg.distill:
        distill_info = _distill(
            model, processor, classifier, train_rows, held, cfg, out, kinds, params, seed, s3, say
        )

    say(f"measuring {metric_name} and latency")
    runners: dict[str, Any] = {}
    threads = cfg.latency_threads
    for name, kind in kinds.items():
        runners[name] = open_variant(out / name, kind, threads, name).runner  # type: ignore[arg-type]
    metrics: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for name, runner in runners.items():
            if targets is not None:
                value = cl.accuracy(runner, held.batches, targets)
            else:
                img, txt = embed_all(runner, held)
                value = recall(img, txt, held.captions)
            metrics[name] = {"metric": metric_name, metric_name: round(value, 4)}
    del runners  # the latency process loads its own copies
    timed = {name: (out / name, kind) for name, kind in kinds.items()}
    if champion is not None:
        timed[CHAMPION_KEY] = champion
    latency, latency_setup = measure_saved_latency(
        timed,
        held,
        cfg.latency_batch_sizes,
        threads,
        cfg.latency_repeats,
        progress=say,
    )
    champion_latency = latency.pop(CHAMPION_KEY, None)
    delta_key = delta_name(metric_name)
    base = metrics[BASELINE][metric_name]
    sizes = {name: _size(out / name, _model_files(out / name)) for name in kinds}
    top = str(max(cfg.latency_batch_sizes))
    for name, m in metrics.items():
        lat = latency[name]
        m.update(
            {delta_key: round(m[metric_name] - base, 4)},
            size_bytes=sizes[name],
            size_ratio=round(sizes[BASELINE] / sizes[name], 3),
            params=params[name],
            latency_ms=lat,
            throughput_pairs_per_s=lat[top]["pairs_per_s"],
            speedup={b: round(latency[BASELINE][b]["p50_ms"] / lat[b]["p50_ms"], 3) for b in lat},
            threads=threads,
            **extra.get(name, {}),
        )
    sel = str(cfg.selection_batch_size)
    choice = choose_variant(
        metrics,
        cfg.selection,
        cfg.max_recall_drop,
        cfg.selection_batch_size,
        metric_name,
        champion_p50_ms=champion_latency[sel]["p50_ms"] if champion_latency else None,
        max_slowdown=cfg.max_slowdown_vs_champion,
    )
    records = [
        VariantRecord(
            name=name,
            kind="torch" if kinds[name] == "torch" else "onnx",
            files=sorted(p.name for p in (out / name).iterdir() if p.is_file()),
            metrics=metrics[name],
            chosen=name == choice.name,
            description=DESCRIPTIONS[name],
        )
        for name in kinds
    ]
    index = VariantIndex(
        chosen=choice.name,
        source_digest=loaded.digest,
        task="classifier" if classifier is not None else "clip",
        labels=classifier.spec.labels if classifier is not None else None,
        selection={
            "rule": cfg.selection,
            "metric": metric_name,
            "max_recall_drop": cfg.max_recall_drop,
            "batch_size": cfg.selection_batch_size,
            **choice.to_dict(),
            **({"champion_latency_ms": champion_latency} if champion_latency else {}),
        },
        variants=records,
    )
    index.write(out)
    table = variants_markdown(index, held_out_rows=held.rows)
    (out / TABLE_FILE).write_text(table)
    enforce_latency_budget(choice, cfg.on_latency_budget_miss, str(out / TABLE_FILE))
    say(f"chosen variant: {choice.name} ({choice.reason})")
    return CompressResult(
        index, table, held.rows, calibration_rows, distill_info, dict(latency_setup)
    )


def _distill(
    model: CLIPModel,
    processor: CLIPProcessor,
    classifier: Classifier | None,
    train_rows: pd.DataFrame,
    held: HeldOut,
    cfg: CompressConfig,
    out: Path,
    kinds: dict[str, str],
    params: dict[str, int],
    seed: int,
    s3: S3Config | None,
    say: Progress,
) -> dict[str, Any]:
    """Train the student (``student_fp32``) and its int8 ONNX variant (``student_int8``)."""

    say("distillation: training the student")

    def steps(step: int, total: int) -> None:
        if step == total or step % 20 == 0:
            say(f"distillation step {step}/{total}")

    common: dict[str, Any] = {
        "temperature": cfg.kd_temperature,
        "alpha": cfg.kd_alpha,
        "seed": seed,
        "s3": s3,
        "progress": steps,
    }
    student_cls: Classifier | None = None
    if classifier is None:
        result = kd.distill_clip(model, processor, train_rows, cfg.student, **common)
        save_clip(out / "student_fp32", result.student, processor)
    else:
        result = kd.distill_classifier(
            model,
            classifier.head,
            classifier.spec.labels,
            processor,
            train_rows,
            cfg.student,
            **common,
        )
        assert result.head is not None
        save_trained(
            out / "student_fp32",
            result.student,
            processor,
            kind="classifier",
            labels=classifier.spec.labels,
            head=result.head,
            base={"teacher_digest": classifier.trained.clip.digest},
            metrics={"distill": result.fit},
        )
        trained = open_model(out / "student_fp32", variant="torch").trained
        assert trained is not None and trained.head is not None
        student_cls = Classifier(
            classifier.spec, trained.head, cl.TorchClassifier(trained), trained
        )
    kinds["student_fp32"], params["student_fp32"] = "torch", result.student_params
    info = {
        **result.fit,
        "teacher_params": result.teacher_params,
        "student_params": result.student_params,
        "param_ratio": round(result.student_params / result.teacher_params, 4),
    }
    if cfg.int8:
        with tempfile.TemporaryDirectory(prefix="pairflow-student-onnx-") as tmp:
            _export_checked(
                result.student, processor, Path(tmp), held, cfg, "distilled student", student_cls
            )
            _quantize_dynamic_dir(Path(tmp), out / "student_int8", cfg)
        kinds["student_int8"], params["student_int8"] = "onnx", result.student_params
    return info
