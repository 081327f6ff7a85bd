"""Every documented training mode trains under DDP (torchrun, 2 processes, gloo).

The matrix is the full product the config documents: ``train.model`` (clip, classifier) x
``train.fusion`` (concat, gated, late, cross_attention; classifier only, CLIP has no head) x
``train.freeze_towers`` x ``train.lora_rank`` (0, 4) x ``train.precision`` (fp32, bf16) x
``train.grad_accum`` (1, 2): 16 CLIP + 64 classifier = 80 combinations, each trained for real
under DDP. To amortise process start, all 80 run inside ONE torchrun launch (the module fixture;
``ddp_modes_worker.py`` is the rank's code) on a 24-row synthetic set with the tiny CLIP; each
combination is its own test reading its record, so a failure names the mode. Per mode:

- every step's loss is finite, and the loss on the whole training set goes down;
- trainable parameters moved and both ranks hold bit-identical parameters afterwards;
- a fresh model on the checkpoint folder resumes at the last step with exactly the trained
  weights on every rank, and a longer run continues from it.

``test_every_mode_uses_every_trainable_parameter`` checks in process (no DDP, fast) the property
DDP needs, for every structural combination and both precisions: one forward + backward gives a
gradient to every parameter handed to the optimizer (grad_accum does not change the graph).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from pairflow.demo.synthetic import generate_dataset
from pairflow.models import heads as models
from pairflow.models import pairs as tdata
from pairflow.models.clip import load_clip
from pairflow.models.scratch import save_untrained_clip
from pairflow.stages.train.launch import free_port

WORKER = Path(__file__).with_name("ddp_modes_worker.py")


def _combos() -> list[dict[str, Any]]:
    out = []
    for model, fusion, freeze, lora, precision, accum in itertools.product(
        ("clip", "classifier"), models.FUSIONS, (False, True), (0, 4), ("fp32", "bf16"), (1, 2)
    ):
        if model == "clip" and fusion != "concat":
            continue  # fusion applies to the classifier only
        out.append(
            {
                "model": model,
                "fusion": fusion,
                "freeze_towers": freeze,
                "lora_rank": lora,
                "precision": precision,
                "grad_accum": accum,
            }
        )
    return out


def _name(c: dict[str, Any]) -> str:
    head = "clip" if c["model"] == "clip" else f"classifier-{c['fusion']}"
    frozen = "frozen" if c["freeze_towers"] else "full"
    return f"{head}-{frozen}-lora{c['lora_rank']}-{c['precision']}-accum{c['grad_accum']}"


COMBOS = _combos()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(24-row labelled manifest with absolute image paths, untrained tiny CLIP dir)."""
    root = tmp_path_factory.mktemp("ddp-modes")
    gen = generate_dataset(root / "data", 24, seed=5, defects=False)
    df = pd.read_parquet(gen.manifest)
    df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
    manifest = root / "rows.parquet"
    df.to_parquet(manifest)
    return manifest, save_untrained_clip(root / "base", list(df["caption"]), seed=0)


@pytest.fixture(scope="module")
def matrix(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every combination in one 2-process torchrun launch; records by name (+ log tail)."""
    manifest, base = setup
    out = tmp_path_factory.mktemp("ddp-modes-out")
    (out / "combos.json").write_text(json.dumps(COMBOS))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER),
        "--manifest", str(manifest), "--base", str(base), "--combos", str(out / "combos.json"),
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    results = out / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()] if (
        results.exists()
    ) else []  # fmt: skip
    log = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    return {"records": {_name(r): r for r in records}, "code": proc.returncode, "log": log}


@pytest.mark.slow
@pytest.mark.parametrize("combo", COMBOS, ids=_name)
def test_mode_trains_under_ddp(combo: dict[str, Any], matrix: dict[str, Any]) -> None:
    rec = matrix["records"].get(_name(combo))
    assert rec is not None, f"torchrun exited {matrix['code']} before this mode:\n{matrix['log']}"
    assert rec["world_size"] == 2 and rec["bad_steps"] == 0
    steps_per_epoch = 3 // combo["grad_accum"]  # 12 rows per rank / batch 4 = 3 micro-batches
    assert rec["steps"] == 3 * steps_per_epoch and rec["epochs"] == 3
    losses = rec["losses"]
    assert len(losses) == rec["steps"] and all(map(torch.isfinite, torch.tensor(losses)))
    assert rec["set_loss_after"] < rec["set_loss_before"], rec
    assert rec["trainable"] > 0 and rec["changed"] > 0
    assert rec["rank_max_diff"] == 0.0  # both ranks hold the same parameters, bit for bit
    # a fresh process on the checkpoint folder picks up exactly where training stopped ...
    assert rec["resumed_from_step"] == rec["steps"] == rec["resumed_steps"]
    assert rec["resume_max_diff"] == 0.0
    # ... and a longer run continues from there instead of starting over
    assert rec["extended_resumed_from"] == rec["steps"]
    assert rec["extended_steps"] == rec["steps"] + steps_per_epoch
    assert all(map(torch.isfinite, torch.tensor(rec["extended_losses"])))


def test_matrix_covers_every_documented_mode() -> None:
    from pairflow.stages.train.settings import TrainConfig

    fields = TrainConfig.model_fields
    documented_fusions = set(fields["fusion"].annotation.__args__)  # type: ignore[union-attr]
    documented_models = set(fields["model"].annotation.__args__)  # type: ignore[union-attr]
    assert documented_fusions == set(models.FUSIONS)
    assert {c["model"] for c in COMBOS} == documented_models
    assert {c["fusion"] for c in COMBOS if c["model"] == "classifier"} == documented_fusions
    assert len(COMBOS) == 16 + 64 and len({_name(c) for c in COMBOS}) == len(COMBOS)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_mode_uses_every_trainable_parameter(
    setup: tuple[Path, Path], precision: str
) -> None:
    manifest, base = setup
    loaded = load_clip(str(base), device="cpu")
    frame = pd.read_parquet(manifest).head(4)
    labels = tdata.label_names([pd.read_parquet(manifest)], str(manifest))
    ip = loaded.processor.image_processor
    aug = tdata.PairAugment(int(ip.crop_size["height"]), ip.image_mean, ip.image_std, None)
    rows = tdata.PairDataset(frame, aug, seed=0, labels=labels)
    batch = tdata.Collate(loaded.processor, loaded.max_text_length)(
        [rows[(0, i)] for i in range(len(rows))]
    )
    state = loaded.model.state_dict()
    for model, fusion, freeze, lora in itertools.product(
        ("clip", "classifier"), models.FUSIONS, (False, True), (0, 4)
    ):
        if model == "clip" and fusion != "concat":
            continue
        clip = type(loaded.model)(loaded.model.config)
        clip.load_state_dict(state)
        built = models.build_trainable(
            clip.train(),
            model=model,
            fusion=fusion,
            freeze_towers=freeze,
            lora_rank=lora,
            n_classes=len(labels),
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            unused = models.unused_parameters(built.module, built.objective, batch)
        assert unused == [], (model, fusion, freeze, lora, unused)
        if model == "classifier":
            # the CLIP parts its fusion never reads are frozen, not silently skipped
            base_clip = models.base_clip(built.tower)
            assert not base_clip.logit_scale.requires_grad
            assert base_clip.visual_projection.weight.requires_grad == (
                fusion != "cross_attention" and not (freeze and not lora)
            )
