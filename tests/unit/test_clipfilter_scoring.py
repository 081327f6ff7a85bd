"""Batched CLIP scoring: cosine scores, worker parity, bad images, retries, run_filter outputs.

A randomly initialised tiny CLIP is enough here: the checks are about the plumbing (the
pretrained reference model's quality is an integration test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pairflow.config import ClipFilterConfig
from pairflow.data import imageio
from pairflow.data.decode import decode_image
from pairflow.data.pixels import SizedPixels
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import GenerateSummary
from pairflow.errors import InputDataError
from pairflow.models import batches, clip, scoring, scratch
from pairflow.models.clip import LoadedClip, load_clip
from pairflow.models.embeddings import read_embeddings
from pairflow.models.scoring import (
    CaptionTokens,
    Collate,
    RawCollate,
    plan_streams,
    plan_threads,
    score_frame,
)
from pairflow.stages.clip_filter.run import FilterOutputs, run_filter

BAD_FILE_REASONS = {
    "corrupt_file": "corrupt_image",
    "zero_byte_file": "empty_file",
    "not_an_image": "not_an_image",
    "missing_file": "missing_file",
}


@pytest.fixture(scope="module")
def frame(small_dataset: GenerateSummary) -> pd.DataFrame:
    return read_source(str(small_dataset.manifest), "parquet")


@pytest.fixture(scope="module")
def truth(small_dataset: GenerateSummary) -> pd.DataFrame:
    return pd.read_parquet(small_dataset.ground_truth)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame) -> LoadedClip:
    out = tmp_path_factory.mktemp("tiny-clip") / "m"
    scratch.save_untrained_clip(out, [str(c) for c in frame["caption"]], seed=3)
    return load_clip(str(out))


def _clean(frame: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["id"].isin(truth["id"])].reset_index(drop=True)


def test_scores_are_cosine_of_normalised_embeddings(
    frame: pd.DataFrame, truth: pd.DataFrame, loaded: LoadedClip
) -> None:
    rows = _clean(frame, truth).head(5)
    result = score_frame(rows, loaded, ClipFilterConfig(batch_size=2, num_workers=0))
    images = [decode_image(Path(p).read_bytes()).image for p in rows["image"]]
    proc = loaded.processor
    with torch.inference_mode():
        pixels = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
        tok = proc.tokenizer(list(rows["caption"]), padding=True, return_tensors="pt")
        img = F.normalize(
            clip.features(loaded.model.get_image_features(pixel_values=pixels)), dim=-1
        )
        txt = F.normalize(
            clip.features(
                loaded.model.get_text_features(
                    input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
                )
            ),
            dim=-1,
        )
    manual = (img * txt).sum(-1).numpy()
    np.testing.assert_allclose(result.scores, manual, atol=1e-5)
    np.testing.assert_allclose(result.image_emb, img.numpy(), atol=2e-3)
    np.testing.assert_allclose(result.text_emb, txt.numpy(), atol=2e-3)
    assert result.image_emb.dtype == np.float16
    assert not result.failures and result.scored.all()


def test_workers_and_streams_give_the_same_scores(frame: pd.DataFrame, loaded: LoadedClip) -> None:
    serial = ClipFilterConfig(batch_size=16, num_workers=0, torch_threads=1)
    inline = score_frame(frame, loaded, serial)
    assert plan_streams(inline.torch_threads, loaded.device) == (1, 1)
    parallel = ClipFilterConfig(batch_size=16, num_workers=2, torch_threads=2)
    workers = score_frame(frame, loaded, parallel, workers=2)
    assert plan_streams(workers.torch_threads, loaded.device) == (2, 1)
    assert workers.workers == 2 and inline.workers == 0
    np.testing.assert_allclose(workers.scores, inline.scores, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(workers.image_emb, inline.image_emb)
    assert workers.failures == inline.failures


def test_sized_pixels_match_the_processor(
    frame: pd.DataFrame, truth: pd.DataFrame, loaded: LoadedClip
) -> None:
    rows = _clean(frame, truth).head(8)
    images = [decode_image(Path(p).read_bytes()).image for p in rows["image"]]
    sized = SizedPixels.from_processor(loaded.processor.image_processor)
    assert sized is not None
    reference = loaded.processor.image_processor(images=images, return_tensors="pt")
    raw = sized.raw(images)
    assert raw is not None and raw.dtype == np.uint8
    torch.testing.assert_close(
        sized.normalise_tensor(torch.from_numpy(raw)), reference["pixel_values"], atol=1e-5, rtol=0
    )
    numpy_pixels = sized(images)
    assert numpy_pixels is not None
    np.testing.assert_allclose(numpy_pixels, reference["pixel_values"].numpy(), atol=1e-5)
    # the scorer's batches carry uint8 pixels; embed_batch normalises them like the processor
    items = [batches._Item(i, "a caption", im, None) for i, im in enumerate(images)]
    raw_batch = RawCollate(loaded.processor.image_processor)(items)
    assert raw_batch.pixel_values is not None and raw_batch.pixel_values.dtype == torch.uint8
    float_batch = Collate(loaded.processor, 77)(items)
    assert float_batch.pixel_values is not None
    torch.testing.assert_close(
        float_batch.pixel_values, reference["pixel_values"], atol=1e-5, rtol=0
    )
    raw_batch.input_ids, raw_batch.attention_mask = (
        float_batch.input_ids,
        float_batch.attention_mask,
    )
    for got, want in zip(
        scoring.embed_batch(loaded, raw_batch),
        scoring.embed_batch(loaded, float_batch),
        strict=True,
    ):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # other sizes go through the processor itself (resize + crop), in the same batch
    images[3] = images[3].resize((80, 96))
    assert sized(images) is None and sized.raw(images) is None
    items = [batches._Item(i, "a caption", im, None) for i, im in enumerate(images)]
    expected = loaded.processor.image_processor(images=images, return_tensors="pt")
    for collated in (
        Collate(loaded.processor, 77)(items),
        RawCollate(loaded.processor.image_processor)(items),
    ):
        assert collated.pixel_values is not None
        torch.testing.assert_close(collated.pixel_values, expected["pixel_values"])
    assert SizedPixels.from_processor(object()) is None


def test_caption_tokens_pad_like_the_tokenizer(frame: pd.DataFrame, loaded: LoadedClip) -> None:
    tok = loaded.processor.tokenizer
    captions = [*(str(c) for c in frame["caption"].head(40)), "", "a b " * 200, "dup", "dup"]
    tokens = CaptionTokens.build(tok, captions, max_length=16)
    assert len(tokens.table) < len(captions)  # distinct captions are tokenised once
    for rows in ([0, 1, 2], [40, 41, 42, 43], list(range(len(captions)))[::-3]):
        ids, mask = tokens.for_rows(np.asarray(rows))
        enc = tok(
            [captions[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=16,
            return_tensors="pt",
        )
        torch.testing.assert_close(ids, enc["input_ids"])
        torch.testing.assert_close(mask, enc["attention_mask"])


def test_bad_images_are_failures_not_crashes(
    frame: pd.DataFrame, truth: pd.DataFrame, loaded: LoadedClip
) -> None:
    result = score_frame(frame, loaded, ClipFilterConfig(batch_size=16, num_workers=2))
    reasons = {str(frame["id"][pos]): f.reason for pos, f in result.failures.items()}
    expected = {
        str(row.id): BAD_FILE_REASONS[str(row.kind)]
        for row in truth.itertuples()
        if row.kind in BAD_FILE_REASONS
    }
    assert reasons == expected
    assert np.isnan(result.scores[list(result.failures)]).all()
    assert result.scored.sum() == len(frame) - len(expected)


def test_transient_read_errors_are_retried(
    frame: pd.DataFrame, truth: pd.DataFrame, loaded: LoadedClip, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _clean(frame, truth).head(3)
    flaky = str(rows["image"][1])
    calls = {"n": 0}
    real = imageio.read_image_bytes

    def read(uri: str, s3: object = None) -> bytes:
        if uri == flaky:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise InputDataError(f"{uri}: S3 error SlowDown (please reduce your rate)")
        return real(uri, None)

    monkeypatch.setattr(imageio, "read_image_bytes", read)
    monkeypatch.setattr(batches, "_BACKOFF_S", 0.0)
    ok = score_frame(rows, loaded, ClipFilterConfig(num_workers=0, read_retries=3))
    assert calls["n"] == 3 and ok.scored.all()
    calls["n"] = 0
    failed = score_frame(rows, loaded, ClipFilterConfig(num_workers=0, read_retries=1))
    assert calls["n"] == 2
    assert failed.failures[1].reason == "unreadable_image"
    assert "SlowDown" in failed.failures[1].detail


def test_run_filter_rejects_bad_rows_and_writes_artifacts(
    tmp_path: Path,
    frame: pd.DataFrame,
    truth: pd.DataFrame,
    loaded: LoadedClip,
    small_dataset: GenerateSummary,
) -> None:
    outputs = FilterOutputs.in_dir(tmp_path / "out")
    cfg = ClipFilterConfig(top_fraction=0.5, batch_size=16, num_workers=2)
    result = run_filter(
        frame, cfg, outputs=outputs, model=loaded, ground_truth=small_dataset.ground_truth
    )
    assert len(result.kept) + len(result.rejected) == len(frame)
    assert sum(result.counts.values()) == len(result.rejected)
    bad = truth[truth["kind"].isin(list(BAD_FILE_REASONS))]
    for kind, reason in BAD_FILE_REASONS.items():
        assert result.counts[reason] == (bad["kind"] == kind).sum()
    assert "clip_score" in result.kept.columns and "clip_score" in result.rejected.columns
    assert result.kept["clip_score"].notna().all()
    m = result.metrics
    assert m["mode"] == "top_fraction" and m["scored"] == len(frame) - len(bad)
    assert set(m["score_quantiles"]) == {"p5", "p25", "p50", "p75", "p95"}
    assert m["rows_per_s"] > 0 and m["model_digest"] == loaded.digest
    assert 0.0 <= m["roc_auc"] <= 1.0 and m["auc_positives"] >= 1
    assert outputs.embeddings is not None and outputs.summary is not None
    emb = read_embeddings(outputs.embeddings)
    assert len(emb.ids) == m["scored"] and emb.meta["model_digest"] == loaded.digest
    assert outputs.histogram is not None and outputs.histogram.read_text().startswith("<!DOC")
    assert "keep top 50.0%" in outputs.summary.read_text()


def test_plan_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ClipFilterConfig(batch_size=64, num_workers=2)
    monkeypatch.setattr(scoring, "available_cpus", lambda: 8)
    assert plan_threads(cfg, 10)[0] == 0  # one batch: decoded in-process
    assert plan_threads(cfg, 1000) == (2, 8)
    assert plan_threads(ClipFilterConfig(torch_threads=3), 1000)[1] == 3
    # two CPUs: the model's two streams fill them; local reads decode in-process
    monkeypatch.setattr(scoring, "available_cpus", lambda: 2)
    assert plan_threads(cfg, 1000) == (0, 2)
    assert plan_threads(cfg, 1000, remote_reads=True) == (2, 2)  # S3 reads still overlap
    assert scoring.reads_remote(["/a.jpg", "s3://b/k.jpg"])
    assert not scoring.reads_remote(["/a.jpg", "s3://b/shard.tar#k.jpg", None])
    cpu = torch.device("cpu")
    assert plan_streams(1, cpu) == (1, 1)
    assert plan_streams(2, cpu) == (2, 1)
    assert plan_streams(16, cpu) == (scoring.MAX_STREAMS, 16 // scoring.MAX_STREAMS)
    assert plan_streams(8, torch.device("cuda")) == (1, 8)
    big = scoring.STREAM_MAX_PARAMS + 1
    assert plan_streams(2, cpu, params=big, batches=10) == (1, 2)  # ViT-B/32-sized: one stream
    assert plan_streams(2, cpu, params=300_000, batches=10) == (2, 1)  # the demo's tiny CLIP
    assert plan_streams(2, cpu, params=300_000, batches=1) == (1, 2)  # nothing to overlap
