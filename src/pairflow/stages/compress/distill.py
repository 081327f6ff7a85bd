"""Distillation: a narrower/shallower student CLIP trained from the teacher with
:func:`pairflow.models.loop.fit` (the train step's loop: DDP when a process group is up,
checkpoints, AMP, best-weights keeping) and a KD objective plugged into it.

The student starts from the teacher's weights (:func:`inherit_from_teacher`: a spread subset
of its layers, its most important MLP neurons, its embeddings and projections), so on a few
hundred rows it only has to relearn what the dropped layers did; a randomly initialised
student would have to learn the task from those rows alone.

CLIP loss: ``alpha * KD + (1 - alpha) * contrastive + embedding_weight * (2 - cos_img -
cos_txt)``, KD being the KL divergence between the teacher's and the student's in-batch
similarity logits softened by ``T`` (rows: image -> text, and columns: text -> image), scaled
by ``T**2``, and ``cos_*`` the mean cosine of the student's embeddings to the teacher's.
Classifier loss: the same mix of KD on the class logits and cross-entropy on the labels.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pairflow.config import AugmentConfig, S3Config
from pairflow.data.split import split_holdout
from pairflow.models.errors import StudentConfigError
from pairflow.models.heads import ClipTowers, FusionClassifier, build_head
from pairflow.models.objectives import classifier_metrics, clip_metrics, contrastive_loss
from pairflow.models.towers import count_parameters
from pairflow.stages.compress.settings import StudentConfig

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from pairflow.models.heads import FusionHead

log = logging.getLogger("pairflow.stages.compress.distill")

VAL_FRACTION = 0.1


def _tower_shape(teacher: Any, s: StudentConfig, tower: str) -> tuple[int, int, int, int]:
    """(hidden, layers, heads, intermediate) of the student's ``tower``."""
    t_hidden = int(teacher.hidden_size)
    t_layers = int(teacher.num_hidden_layers)
    t_heads = int(teacher.num_attention_heads)
    t_inter = int(teacher.intermediate_size)
    head_dim = max(1, t_hidden // t_heads)
    hidden = s.hidden_size or max(8, round(t_hidden * s.width_factor / 8) * 8)
    factor = getattr(s, f"{tower}_layer_factor") or s.layer_factor
    layers = s.num_layers or max(1, round(t_layers * factor))
    heads = s.num_heads or max(1, hidden // head_dim)
    if hidden > t_hidden:
        raise StudentConfigError(
            f"compress.student: {tower} hidden size {hidden} is larger than the teacher's "
            f"{t_hidden}; a student must be smaller"
        )
    if layers > t_layers:
        raise StudentConfigError(
            f"compress.student: {tower} has {layers} layers, more than the teacher's "
            f"{t_layers}; a student must be smaller"
        )
    if hidden % heads:
        raise StudentConfigError(
            f"compress.student: {tower} hidden size {hidden} is not divisible by "
            f"{heads} attention heads"
        )
    mlp = getattr(s, f"{tower}_mlp_factor") or s.mlp_factor
    intermediate = s.intermediate_size or max(8, round(t_inter * hidden / t_hidden * mlp))
    if intermediate > t_inter:
        raise StudentConfigError(
            f"compress.student: {tower} MLP size {intermediate} is larger than the teacher's "
            f"{t_inter}; a student must be smaller"
        )
    return hidden, layers, heads, intermediate


def student_config(teacher: CLIPConfig, s: StudentConfig) -> CLIPConfig:
    """The student's ``CLIPConfig``: the teacher's vocabulary, context, image size, patch size
    and joint embedding size with shallower (and, if asked, narrower) towers and MLPs."""
    # lazy: transformers (slow to import); only this path needs it
    from transformers import CLIPConfig

    towers: dict[str, dict[str, Any]] = {}
    for name in ("text", "vision"):
        t_cfg = getattr(teacher, f"{name}_config")
        hidden, layers, heads, inter = _tower_shape(t_cfg, s, name)
        d = t_cfg.to_dict()
        d.update(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
        )
        towers[name] = d
    return CLIPConfig(
        text_config=towers["text"],
        vision_config=towers["vision"],
        projection_dim=teacher.projection_dim,
        logit_scale_init_value=teacher.logit_scale_init_value,
    )


def kept_layers(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layers the student's layers start from: spread evenly, the last one always kept
    (it feeds the final norm and the projection); one layer keeps the last."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


_LAYER = re.compile(r"^(?P<tower>text_model|vision_model)\.encoder\.layers\.(?P<i>\d+)\.")


_MLP_KEYS = ("mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight")


def _mlp_neurons(teacher_sd: dict[str, torch.Tensor], prefix: str, keep: int) -> torch.Tensor:
    """The ``keep`` most important MLP neurons of a teacher layer (``|fc1 row| * |fc2 col|``),
    in their original order."""
    fc1 = teacher_sd[f"{prefix}mlp.fc1.weight"].float()
    fc2 = teacher_sd[f"{prefix}mlp.fc2.weight"].float()
    score = fc1.norm(dim=1) * fc2.norm(dim=0)
    return torch.sort(torch.topk(score, keep).indices).values


def inherit_from_teacher(student: CLIPModel, teacher: CLIPModel) -> dict[str, int]:
    """Initialise ``student`` from ``teacher`` (weight inheritance, DistilBERT/TinyCLIP style).

    Student layer ``i`` of each tower copies teacher layer :func:`kept_layers` ``[i]``; an MLP
    narrower than the teacher's keeps the teacher's most important neurons (by
    ``|fc1 row| * |fc2 col|``); embeddings, norms, projections and the logit scale are copied.
    Same width: exact copies. A narrower hidden size keeps the leading dimensions of every
    tensor (an approximate start that distillation then corrects). Returns tensors copied.
    """
    t_sd = {k: v.detach() for k, v in teacher.state_dict().items()}
    maps = {
        tower: kept_layers(
            int(getattr(teacher.config, cfg).num_hidden_layers),
            int(getattr(student.config, cfg).num_hidden_layers),
        )
        for tower, cfg in (("text_model", "text_config"), ("vision_model", "vision_config"))
    }
    neurons: dict[str, torch.Tensor] = {}
    copied = 0
    with torch.no_grad():
        for key, dst in student.state_dict().items():
            src_key = key
            m = _LAYER.match(key)
            if m is not None:
                layer = maps[m["tower"]][int(m["i"])]
                src_key = f"{m['tower']}.encoder.layers.{layer}." + key[m.end() :]
            src = t_sd.get(src_key)
            if src is None or src.dim() != dst.dim():
                continue
            if m is not None and src_key.endswith(_MLP_KEYS):
                prefix = src_key[: src_key.index("mlp.fc")]
                n_inter = dst.shape[0] if ".fc1." in src_key else dst.shape[-1]
                if prefix not in neurons:
                    neurons[prefix] = _mlp_neurons(t_sd, prefix, n_inter)
                idx = neurons[prefix]
                src = src.index_select(0, idx) if ".fc1." in src_key else src[..., idx]
            if any(s < d for s, d in zip(src.shape, dst.shape, strict=True)):
                continue
            dst.copy_(src[tuple(slice(0, d) for d in dst.shape)])
            copied += 1
    return {"copied": copied, "total": len(student.state_dict())}


def build_student(teacher: CLIPModel, s: StudentConfig, seed: int = 0) -> CLIPModel:
    """The student CLIP, initialised from the teacher (``s.init_from_teacher``, the default)
    or randomly; :class:`StudentConfigError` unless it has fewer parameters than
    ``teacher``."""
    # lazy: transformers (slow to import); only this path needs it
    from transformers import CLIPModel

    torch.manual_seed(seed)
    student = CLIPModel(student_config(teacher.config, s))
    if s.init_from_teacher:
        inherit_from_teacher(student, teacher)
    else:
        # the token and position tables have the teacher's vocabulary and context: start
        # the student's from the teacher's leading columns
        with torch.no_grad():
            for name in ("token_embedding", "position_embedding"):
                src = getattr(teacher.text_model.embeddings, name).weight
                dst = getattr(student.text_model.embeddings, name).weight
                dst.copy_(src[:, : dst.shape[1]])
            student.logit_scale.copy_(teacher.logit_scale)
    n_student, n_teacher = count_parameters(student), count_parameters(teacher)
    if n_student >= n_teacher:
        raise StudentConfigError(
            f"compress.student: the student has {n_student} parameters, not fewer than the "
            f"teacher's {n_teacher}"
        )
    return student


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, batch-mean over rows."""
    return (
        F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


class ClipKDObjective:
    """KD on in-batch similarity logits (both directions) + the contrastive loss, plus
    ``embedding_weight`` x the mean cosine distance of the student's embeddings to the
    teacher's (image and text: a per-row target the in-batch logits alone do not give).

    Holds the frozen teacher (a ``ClipTowers``-like module returning normalised ``image``,
    ``text`` and ``logit_scale``) and computes its outputs from the batch.
    """

    def __init__(
        self, teacher: nn.Module, temperature: float, alpha: float, embedding_weight: float = 0.0
    ) -> None:
        teacher.train(False)
        self.teacher = teacher
        self.t = temperature
        self.alpha = alpha
        self.embedding_weight = embedding_weight

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Any:

        with torch.no_grad():
            teach = self.teacher(batch)
            t_logits = teach["logit_scale"] * teach["image"].float() @ teach["text"].float().T
        s_logits = outputs["logit_scale"] * outputs["image"].float() @ outputs["text"].float().T
        kd = 0.5 * (kd_kl(s_logits, t_logits, self.t) + kd_kl(s_logits.T, t_logits.T, self.t))
        hard = contrastive_loss(outputs["image"], outputs["text"], outputs["logit_scale"])
        loss = self.alpha * kd + (1 - self.alpha) * hard
        if self.embedding_weight:
            cos_i = (outputs["image"].float() * teach["image"].float()).sum(-1).mean()
            cos_t = (outputs["text"].float() * teach["text"].float()).sum(-1).mean()
            loss = loss + self.embedding_weight * (2 - cos_i - cos_t)
        return loss


class ClassifierKDObjective:
    """KD on class logits + cross-entropy on ``batch['label']``."""

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float) -> None:
        teacher.train(False)
        self.teacher = teacher
        self.t = temperature
        self.alpha = alpha

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> Any:
        with torch.no_grad():
            t_logits = self.teacher(batch)["logits"]
        s_logits = outputs["logits"]
        kd = kd_kl(s_logits, t_logits, self.t)
        hard = F.cross_entropy(s_logits.float(), batch["label"])
        return self.alpha * kd + (1 - self.alpha) * hard


@dataclass
class DistillResult:
    student: CLIPModel
    teacher_params: int
    student_params: int
    fit: dict[str, Any]
    head: FusionHead | None = None


def _frozen(module: nn.Module) -> nn.Module:
    module.train(False)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _student_head(
    student: CLIPModel, teacher_head: FusionHead, n_classes: int, seed: int
) -> FusionHead:
    """A fusion head of the teacher's kind on the student's shapes; it starts from the
    teacher's head weights when the shapes agree (embedding fusions: same joint size)."""

    torch.manual_seed(seed)
    head = build_head(student, teacher_head.kind, n_classes)
    own = head.state_dict()
    theirs = teacher_head.state_dict()
    if own.keys() == theirs.keys() and all(own[k].shape == theirs[k].shape for k in own):
        head.load_state_dict({k: v.detach().clone() for k, v in theirs.items()})
    return head


def _run_fit(
    module: nn.Module,
    objective: Any,
    processor: CLIPProcessor,
    teacher: CLIPModel,
    train_rows: pd.DataFrame,
    s: StudentConfig,
    *,
    labels: list[str] | None,
    seed: int,
    s3: S3Config | None,
    checkpoint_dir: Path | None,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Train ``module`` with :func:`pairflow.models.loop.fit` on ``train_rows`` (a validation
    split of them picks the best epoch: recall for CLIPs, accuracy for classifiers)."""
    # lazy: boto3, botocore, transformers (slow to import); only this path needs it
    from pairflow.models import pairs as tdata
    from pairflow.models.loop import LoopSettings, fit

    pool, val = split_holdout(train_rows, VAL_FRACTION, salt=tdata.VAL_SALT)
    if len(pool) < s.batch_size:
        raise tdata.TrainDataError(
            f"distillation: {len(pool)} training rows, fewer than compress.student.batch_size "
            f"{s.batch_size}"
        )
    if labels is not None:
        known = set(labels)
        unknown = sorted({str(v) for v in train_rows["label"]} - known)
        if unknown:
            raise tdata.TrainDataError(
                f"distillation: training rows have labels {unknown[:5]} the teacher "
                f"classifier does not know (its labels: {labels})"
            )
    ip = processor.image_processor
    size = int(ip.crop_size["height"])
    aug = tdata.PairAugment(size, ip.image_mean, ip.image_std, AugmentConfig())
    plain = tdata.PairAugment(size, ip.image_mean, ip.image_std, None)
    train_set = tdata.PairDataset(pool, aug, seed=seed, labels=labels, s3=s3)
    context = int(teacher.text_model.embeddings.position_embedding.num_embeddings)
    collate = tdata.Collate(processor, context)
    metrics = clip_metrics if labels is None else classifier_metrics
    validate = None
    if len(val) >= 2:
        val_set = tdata.PairDataset(val, plain, seed=seed, labels=labels, s3=s3)
        keys = [(0, i) for i in range(len(val_set))]
        val_batches = [
            collate([val_set[k] for k in keys[i : i + 64]]) for i in range(0, len(keys), 64)
        ]

        def validate(model: nn.Module) -> dict[str, float]:
            return metrics(model, val_batches)

    settings = LoopSettings(
        epochs=s.epochs,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        patience=max(2, s.epochs),
        checkpoint_every=10_000,
        seed=seed,
    )
    result = fit(
        module,
        objective,
        train_set,
        collate,
        settings=settings,
        checkpoint_dir=checkpoint_dir,
        validate=validate,
        progress=progress,
    )
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {
        "steps": result.steps,
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 2),
        "best_val_metric": result.best_metric,
        "samples_per_s": round(result.samples_per_s, 2),
    }


def distill_clip(
    teacher: CLIPModel,
    processor: CLIPProcessor,
    train_rows: pd.DataFrame,
    s: StudentConfig,
    *,
    temperature: float,
    alpha: float,
    seed: int = 0,
    s3: S3Config | None = None,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DistillResult:
    """Train a student CLIP from ``teacher`` on ``train_rows`` (never held-out rows)."""

    student = build_student(teacher, s, seed)
    teacher_towers = _frozen(ClipTowers(copy.deepcopy(teacher)))
    fit = _run_fit(
        ClipTowers(student),
        ClipKDObjective(teacher_towers, temperature, alpha, s.embedding_weight),
        processor,
        teacher,
        train_rows,
        s,
        labels=None,
        seed=seed,
        s3=s3,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    student.train(False)
    return DistillResult(student, count_parameters(teacher), count_parameters(student), fit)


def distill_classifier(
    teacher: CLIPModel,
    teacher_head: FusionHead,
    labels: list[str],
    processor: CLIPProcessor,
    train_rows: pd.DataFrame,
    s: StudentConfig,
    *,
    temperature: float,
    alpha: float,
    seed: int = 0,
    s3: S3Config | None = None,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DistillResult:
    """Train a student classifier (smaller CLIP towers + a fusion head of the teacher's kind)
    from the teacher classifier: ``alpha * KD(logits, T) + (1 - alpha) * CE(labels)``."""

    student = build_student(teacher, s, seed)
    head = _student_head(student, teacher_head, len(labels), seed)
    frozen = _frozen(FusionClassifier(copy.deepcopy(teacher), copy.deepcopy(teacher_head)))
    module = FusionClassifier(student, head)
    n_teacher = count_parameters(teacher) + count_parameters(teacher_head)
    n_student = count_parameters(module)
    if n_student >= n_teacher:
        raise StudentConfigError(
            f"compress.student: the student classifier has {n_student} parameters, not fewer "
            f"than the teacher's {n_teacher}"
        )
    fit = _run_fit(
        module,
        ClassifierKDObjective(frozen, temperature, alpha),
        processor,
        teacher,
        train_rows,
        s,
        labels=labels,
        seed=seed,
        s3=s3,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    module.train(False)
    return DistillResult(student, n_teacher, n_student, fit, head)
