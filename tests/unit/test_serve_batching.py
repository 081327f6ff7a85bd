"""Micro-batching: concurrent requests coalesce into fewer forward passes, same results."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pairflow.models.clip import load_clip
from pairflow.models.open import TorchClip
from pairflow.models.scratch import save_untrained_clip
from pairflow.serve.batching import DirectRunner, MicroBatcher
from pairflow.serve.limits import Pair
from pairflow.serve.predictor import embed_pairs

CAPTIONS = [
    "one small red circle at the top left",
    "two big blue squares in the centre",
    "a green triangle on the right",
    "three yellow stars",
]


class Recorder:
    """A real batch function (a matrix product) that records each batch and its thread."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.weights = np.random.default_rng(0).normal(size=(3, 5))

    def __call__(self, items: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        out = np.stack(items) @ self.weights
        return list(out)


def test_concurrent_requests_coalesce_and_match_unbatched() -> None:
    rng = np.random.default_rng(1)
    requests = [[rng.normal(size=3) for _ in range(1 + i % 3)] for i in range(16)]
    fn = Recorder(delay_s=0.02)
    pool = ThreadPoolExecutor(1, thread_name_prefix="fwd")
    batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(
        fn, pool, max_batch=8, max_delay_s=0.01
    )

    async def main() -> list[list[np.ndarray]]:
        return list(await asyncio.gather(*(batcher.run(r) for r in requests)))

    results = asyncio.run(main())
    items = sum(len(r) for r in requests)
    assert batcher.forward_calls == len(fn.batches) < len(requests)
    assert sum(fn.batches) == items and max(fn.batches) <= 8
    assert fn.threads == {"fwd_0"}  # never on the event loop's thread
    for req, res in zip(requests, results, strict=True):
        assert len(res) == len(req)
        for x, y in zip(req, res, strict=True):
            np.testing.assert_allclose(y, x @ fn.weights)


def test_event_loop_keeps_running_during_a_slow_forward() -> None:
    fn = Recorder(delay_s=0.3)
    batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(
        fn, ThreadPoolExecutor(1), max_batch=4, max_delay_s=0.0
    )
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(10):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.02)

    async def main() -> None:
        await asyncio.gather(batcher.run([np.ones(3)]), ticker())

    asyncio.run(main())
    assert len(ticks) == 10
    assert max(np.diff(ticks)) < 0.2  # the 0.3 s forward pass did not block the loop


def test_a_failing_batch_fails_its_callers_and_the_batcher_recovers() -> None:
    calls = []

    def fn(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if -1 in items:
            raise ValueError("bad item")
        return [i + 1 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(
        fn, ThreadPoolExecutor(1), max_batch=4, max_delay_s=0.0
    )

    async def main() -> list[int]:
        with pytest.raises(ValueError, match="bad item"):
            await batcher.run([1, -1])
        return await batcher.run([5, 6])

    assert asyncio.run(main()) == [6, 7]


def test_direct_runner_runs_each_request_alone() -> None:
    fn = Recorder()
    runner: DirectRunner[np.ndarray, np.ndarray] = DirectRunner(fn, ThreadPoolExecutor(1))

    async def main() -> None:
        await asyncio.gather(*(runner.run([np.ones(3), np.zeros(3)]) for _ in range(5)))

    asyncio.run(main())
    assert fn.batches == [2] * 5 and runner.forward_calls == 5


@pytest.fixture(scope="module")
def tiny_clip_model(tmp_path_factory: pytest.TempPathFactory) -> TorchClip:
    out = save_untrained_clip(tmp_path_factory.mktemp("clip") / "clip", CAPTIONS, seed=3)
    return TorchClip(load_clip(str(out), device="cpu"))


def _pairs(n: int) -> list[Pair]:
    rng = np.random.default_rng(5)
    pairs = []
    for i in range(n):
        pixels = rng.integers(0, 255, size=(48 + 8 * (i % 3), 64, 3), dtype=np.uint8)
        image = Image.fromarray(pixels) if i % 4 != 3 else None
        caption = CAPTIONS[i % len(CAPTIONS)] if i % 5 != 4 else None
        pairs.append(Pair(image, caption))
    return pairs


def test_clip_embeddings_batched_equal_unbatched(tiny_clip_model: TorchClip) -> None:
    pairs = _pairs(10)
    alone = [embed_pairs(tiny_clip_model, [p])[0] for p in pairs]
    batcher: MicroBatcher[Pair, tuple[np.ndarray | None, np.ndarray | None]] = MicroBatcher(
        lambda items: embed_pairs(tiny_clip_model, items),
        ThreadPoolExecutor(1),
        max_batch=16,
        max_delay_s=0.05,
    )

    async def main() -> list[list[tuple[np.ndarray | None, np.ndarray | None]]]:
        return list(await asyncio.gather(*(batcher.run([p]) for p in pairs)))

    batched = [r[0] for r in asyncio.run(main())]
    assert batcher.forward_calls < len(pairs)
    for pair, (img1, txt1), (img2, txt2) in zip(pairs, alone, batched, strict=True):
        assert (img1 is None) == (img2 is None) == (pair.image is None)
        assert (txt1 is None) == (txt2 is None) == (pair.caption is None)
        if img1 is not None and img2 is not None:
            np.testing.assert_allclose(img1, img2, atol=1e-5)
            assert abs(float(np.linalg.norm(img1)) - 1.0) < 1e-5
        if txt1 is not None and txt2 is not None:
            np.testing.assert_allclose(txt1, txt2, atol=1e-5)


def test_batcher_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda xs: xs, ThreadPoolExecutor(1), max_batch=0, max_delay_s=0.0)


def test_items_that_waited_behind_a_running_batch_do_not_wait_again() -> None:
    """The delay counts from an item's arrival: after a long pass, queued items go at once."""
    starts: list[float] = []
    ends: list[float] = []

    def slow(items: Sequence[int]) -> list[int]:
        starts.append(time.monotonic())
        time.sleep(0.5)
        ends.append(time.monotonic())
        return [2 * x for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(
        slow, ThreadPoolExecutor(1), max_batch=8, max_delay_s=0.3
    )

    async def main() -> tuple[list[int], list[int]]:
        first = asyncio.ensure_future(batcher.run([1]))
        await asyncio.sleep(0.4)  # the first pass (alone after 0.3 s) is now running
        second = await batcher.run([2, 3])
        return await first, second

    first, second = asyncio.run(main())
    assert (first, second) == ([2], [4, 6])
    assert batcher.forward_calls == 2
    # the second request arrived ~0.1 s into the first pass: its 0.3 s wait ran out before
    # that pass ended, so its pass starts right after (the old rule waited 0.3 s more)
    assert starts[1] - ends[0] < 0.15
