"""The variant table as Markdown (KFP Markdown artifact, ``variants.md``, the CLI)."""

from __future__ import annotations

from pairflow.models.variants import VariantIndex
from pairflow.stages.compress.select import delta_name


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def variants_markdown(index: VariantIndex, held_out_rows: int = 0) -> str:
    """One row per variant: size, params, latency p50/p95 per batch size, throughput, recall."""
    sizes = sorted({int(b) for v in index.variants for b in v.metrics.get("latency_ms", {})})
    threads = next((v.metrics.get("threads") for v in index.variants), None)
    head = ["variant", "kind", "size MB", "x smaller", "params"]
    for b in sizes:
        head += [f"b{b} p50 ms", f"b{b} p95 ms", f"b{b} speedup"]
    metric = str(index.selection.get("metric", "recall_at_1"))
    delta = delta_name(metric)
    label = "recall@1" if metric == "recall_at_1" else metric
    what = "Recall@1 image→text" if metric == "recall_at_1" else "Classifier accuracy"
    head += ["pairs/s" if metric == "recall_at_1" else "requests/s", label, "Δ vs fp32"]
    lines = [
        "## compress: variants",
        "",
        f"Latency of one {'pair' if metric == 'recall_at_1' else 'classify'} request (both "
        f"towers{'' if metric == 'recall_at_1' else ' + fusion head'}) at {threads} threads, "
        "variants timed interleaved on a shared machine (noisy; compare ratios). "
        f"{what} on {held_out_rows} held-out rows. Chosen: **{index.chosen}** — "
        f"{index.selection.get('reason', '')}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|",
    ]
    for v in index.variants:
        m = v.metrics
        name = f"**{v.name}** ✔" if v.chosen else v.name
        row = [
            name,
            v.kind,
            _mb(int(m["size_bytes"])),
            f"{m['size_ratio']:.2f}",
            f"{int(m['params']):,}",
        ]
        for b in sizes:
            lat = m["latency_ms"][str(b)]
            row += [f"{lat['p50_ms']:.2f}", f"{lat['p95_ms']:.2f}", f"{m['speedup'][str(b)]:.2f}x"]
        row += [
            f"{m['throughput_pairs_per_s']:.1f}",
            f"{m[metric]:.4f}",
            f"{m[delta]:+.4f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
