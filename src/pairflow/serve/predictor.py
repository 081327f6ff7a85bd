"""The KServe custom predictor: embed images/texts, score pairs, classify (V1 and V2).

``load()`` loads the model (any variant, see :mod:`pairflow.models.open`), embeds the
zero-shot class prompts (a train classifier artifact classifies with its own head and labels
instead), runs ``serve.warmup_batches`` forward passes and only then sets
``ready``; KServe answers 503 on ``/v2/models/NAME/ready`` (and ``/v1/models/NAME``) until
then. Per request: cheap checks on the event loop, base64/image decoding on a small thread
pool (small images inline: see ``serve.inline_decode_chars``), the forward pass through the
micro-batcher on a single executor thread (torch's intra-op threads do the parallel work),
and metrics labelled with the model version. After load the heap is frozen for the garbage
collector (see :func:`freeze_heap`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from kserve import Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from pairflow.config import MonitorConfig
from pairflow.models.open import OpenedModel, ServableModel, open_model
from pairflow.parallel import available_cpus
from pairflow.serve.batching import DirectRunner, MicroBatcher, Runner
from pairflow.serve.limits import (
    Pair,
    ParsedRequest,
    RequestError,
    Task,
    check_request,
    decode_request,
    instance_image_bytes,
    parse_v1,
    parse_v2,
)
from pairflow.serve.metrics import ModelMetrics
from pairflow.serve.pyfunc import ZERO_SHOT_SCALE
from pairflow.serve.requestlog.mark import (
    PAYLOAD_KEY,
    ImageFacts,
    build_payload,
    image_facts,
    is_sampled,
    request_key,
)
from pairflow.serve.settings import ServeConfig
from pairflow.serve.v2_rest import input_values

log = logging.getLogger("pairflow.serve.predictor")

Embeddings = tuple[np.ndarray | None, np.ndarray | None]
Outputs = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]  # image, text, logits


def embed_pairs(model: ServableModel, pairs: Sequence[Pair]) -> list[Embeddings]:
    """One forward pass per tower over all images / all captions of ``pairs``."""
    img_idx = [i for i, p in enumerate(pairs) if p.image is not None]
    txt_idx = [i for i, p in enumerate(pairs) if p.caption is not None]
    img = model.embed_images([pairs[i].image for i in img_idx]) if img_idx else None  # type: ignore[misc]
    txt = model.embed_texts([pairs[i].caption for i in txt_idx]) if txt_idx else None  # type: ignore[misc]
    out: list[list[np.ndarray | None]] = [[None, None] for _ in pairs]
    for row, i in enumerate(img_idx):
        out[i][0] = img[row] if img is not None else None
    for row, i in enumerate(txt_idx):
        out[i][1] = txt[row] if txt is not None else None
    return [(a, b) for a, b in out]


def forward_pairs(model: ServableModel, pairs: Sequence[Pair]) -> list[Outputs]:
    """One micro-batch: classifier logits for ``head`` pairs, embeddings for the others."""
    head_idx = [i for i, p in enumerate(pairs) if p.head]
    rest_idx = [i for i, p in enumerate(pairs) if not p.head]
    out: list[Outputs] = [(None, None, None)] * len(pairs)
    if head_idx:
        logits = model.classify(
            [pairs[i].image for i in head_idx],  # type: ignore[misc]
            [pairs[i].caption for i in head_idx],  # type: ignore[misc]
        )
        for row, i in enumerate(head_idx):
            out[i] = (None, None, logits[row])
    if rest_idx:
        embs = embed_pairs(model, [pairs[i] for i in rest_idx])
        for (img, txt), i in zip(embs, rest_idx, strict=True):
            out[i] = (img, txt, None)
    return out


def auto_threads() -> int:
    """Intra-op threads when ``serve.torch_threads`` is 0: all CPUs but one (at least 1).

    The event loop and decode threads need a core: with every core in the OpenMP team, a
    descheduled team thread stalls each forward pass (measured: 1.1 s vs 24 ms per request
    on 2 busy cores).
    """
    return max(1, available_cpus() - 1)


def freeze_heap() -> None:
    """Move everything alive after load (torch, transformers, the model) out of the garbage
    collector's reach: its full collections then scan only request garbage. Measured: with
    16 clients, full collections over the import heap stalled requests ~300 ms (p99 > SLO).
    """
    gc.collect()
    gc.freeze()


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


class PairflowPredictor(Model):  # type: ignore[misc]
    """CLIP-style predictor behind KServe's V1 and V2 REST protocols."""

    def __init__(
        self,
        cfg: ServeConfig,
        uri: str,
        *,
        variant: str = "auto",
        version_label: str | None = None,
        tracking_uri: str | None = None,
        monitor: MonitorConfig | None = None,
    ) -> None:
        super().__init__(cfg.model_name)
        self.cfg = cfg
        self.monitor = monitor or MonitorConfig()
        # Sampled responses carry the monitor payload (for KServe's logger or the local emitter).
        self.mark_rate = (
            self.monitor.sample_rate if (cfg.mark_for_logger or self.monitor.sink_url) else 0.0
        )
        self.uri = uri
        self.variant = variant
        self.version_label = version_label
        self.tracking_uri = tracking_uri
        self.ready = False
        self.loaded: OpenedModel | None = None
        self.metrics = ModelMetrics(cfg.model_name, version_label or "unloaded")
        self.runner: Runner[Pair, Outputs] | None = None
        self._compute: ThreadPoolExecutor | None = None
        self._decode: ThreadPoolExecutor | None = None
        self._labels: list[str] = list(cfg.labels)
        self._label_emb: np.ndarray | None = None
        self._dim = -1

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> bool:
        """Load the model, embed the class prompts, warm up; then report ready."""

        threads = self.cfg.torch_threads or auto_threads()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        loaded = open_model(
            self.uri,
            variant=self.variant,
            threads=threads,
            tracking_uri=self.tracking_uri,
            version_label=self.version_label,
        )
        self.loaded = loaded
        self.metrics = ModelMetrics(self.cfg.model_name, loaded.version)
        self.metrics.announce(loaded.model.variant, loaded.ref)
        if loaded.model.labels is not None:
            self._labels = list(loaded.model.labels)
        else:  # a registered pyfunc's label set wins over serve.labels (same answers as it)
            self._labels = list(loaded.zero_shot_labels or self._labels)
            prompts = [self.cfg.label_prompt.format(label) for label in self._labels]
            self._label_emb = loaded.model.embed_texts(prompts)
        self._dim = int(loaded.model.embed_texts(["a"]).shape[1])
        self._compute = ThreadPoolExecutor(1, thread_name_prefix="pairflow-forward")
        self._decode = ThreadPoolExecutor(self.cfg.decode_threads, thread_name_prefix="decode")
        self.runner = self._make_runner(self._compute)
        blank = Image.new("RGB", (64, 64), (127, 127, 127))
        warm = [Pair(blank, "warm up")] * min(self.cfg.max_batch_size, 8)
        if loaded.model.labels is not None:
            warm = [*warm, Pair(blank, "warm up", head=True)]
        for _ in range(self.cfg.warmup_batches):
            forward_pairs(loaded.model, warm)
        log.info(
            "loaded %s (version %s, variant %s) in %.1f s; %d torch threads",
            loaded.ref,
            loaded.version,
            loaded.model.variant,
            time.perf_counter() - start,
            threads,
        )
        freeze_heap()
        self.ready = True
        return self.ready

    def _make_runner(self, executor: ThreadPoolExecutor) -> Runner[Pair, Outputs]:
        assert self.loaded is not None
        model = self.loaded.model

        def forward(pairs: Sequence[Pair]) -> list[Outputs]:
            return forward_pairs(model, pairs)

        if not self.cfg.batching:
            return DirectRunner(forward, executor, on_batch=self.metrics.batch)
        return MicroBatcher(
            forward,
            executor,
            max_batch=self.cfg.max_batch_size,
            max_delay_s=self.cfg.max_batch_delay_ms / 1000.0,
            on_batch=self.metrics.batch,
        )

    def stop(self) -> None:
        """Release the thread pools (called by KServe when the model is unloaded)."""
        self.ready = False
        for pool in (self._compute, self._decode):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # -- requests -------------------------------------------------------------------------

    async def __call__(
        self,
        body: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        """KServe's handler chain, counted and timed per protocol."""
        protocol = "v2" if isinstance(body, InferRequest) else "v1"
        metrics = self.metrics
        metrics.request(protocol)
        start = time.perf_counter()
        try:
            return await super().__call__(body, headers, verb)
        except InvalidInput:
            metrics.error(protocol, "client")
            raise
        except Exception:
            metrics.error(protocol, "server")
            raise
        finally:
            metrics.latency(protocol, time.perf_counter() - start)

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Parse and check, decode off-loop, run through the batcher, build the response."""
        try:
            parsed = self._parse(payload)
            check_request(parsed, self.cfg)
            head = self._uses_head(parsed)
            if self._decode_inline(parsed):
                pairs = decode_request(parsed, self.cfg)
            else:
                loop = asyncio.get_running_loop()
                pairs = await loop.run_in_executor(self._decode, decode_request, parsed, self.cfg)
        except RequestError as exc:
            raise InvalidInput(str(exc)) from exc
        if self.runner is None:
            raise RuntimeError("predictor used before load()")
        if head:
            pairs = [replace(p, head=True) for p in pairs]
        outs = await self.runner.run(pairs)
        results = self._results(parsed.task, outs)
        mark = None
        if self.mark_rate > 0.0:
            request_id = payload.id if isinstance(payload, InferRequest) else None
            key = request_key(request_id, headers)
            if is_sampled(key, self.mark_rate):
                mark = self._monitor_payload(key, parsed, pairs, outs, results)
        if isinstance(payload, InferRequest):
            params = (
                None if mark is None else {PAYLOAD_KEY: json.dumps(mark, separators=(",", ":"))}
            )
            return self._v2_response(payload, parsed.task, results, params)
        body: dict[str, Any] = {"predictions": results, "model_version": self.metrics.model_version}
        if mark is not None:
            body[PAYLOAD_KEY] = mark
        return body

    def _monitor_payload(
        self,
        key: str,
        parsed: ParsedRequest,
        pairs: list[Pair],
        outs: list[Outputs],
        results: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The monitor payload of a sampled request (digests are computed only here)."""
        images: list[ImageFacts | None] = []
        for i, (raw, pair) in enumerate(zip(parsed.instances, pairs, strict=True)):
            if not raw.has_image:
                images.append(None)
                continue
            images.append(image_facts(instance_image_bytes(raw, i, self.cfg), pair.image))
        return build_payload(
            key=key,
            model_name=self.name,
            model_version=self.metrics.model_version,
            task=parsed.task,
            dim=self._dim,
            images=images,
            outputs=[(img, txt) for img, txt, _ in outs],
            results=results,
        )

    def _decode_inline(self, parsed: ParsedRequest) -> bool:
        """Small base64 images decode on the event loop (~0.1 ms for 64 px, less than the
        thread hop); image paths (file reads) and larger images go to the decode threads."""
        total = 0
        for raw in parsed.instances:
            if raw.image_path is not None:
                return False
            total += raw.image_size
        return total <= self.cfg.inline_decode_chars

    def _uses_head(self, parsed: ParsedRequest) -> bool:
        """A classify request to a classifier model (which needs each image's caption)."""
        if parsed.task != "classify" or self.loaded is None or self.loaded.model.labels is None:
            return False
        for i, raw in enumerate(parsed.instances):
            if raw.caption is None:
                raise RequestError(
                    f"instances[{i}]: this model classifies image-caption pairs: "
                    "task 'classify' needs an image and a caption"
                )
        return True

    def _parse(self, payload: object) -> ParsedRequest:
        if isinstance(payload, InferRequest):
            inputs = [(i.name, i.datatype, list(i.shape), input_values(i)) for i in payload.inputs]
            params = payload.parameters
            if params is not None and not isinstance(params, dict):  # gRPC: a message map
                # lazy: kserve's gRPC types load grpc (slow); only gRPC requests need them
                from kserve.protocol.infer_type import to_http_parameters

                params = to_http_parameters(params)
            return parse_v2(inputs, params)
        return parse_v1(payload)

    # -- metadata -------------------------------------------------------------------------

    def _dims(self) -> tuple[int, int]:
        """(embedding size, number of classes); -1 while not loaded."""
        if self.loaded is None:
            return -1, -1
        return self._dim, len(self._labels)

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 metadata inputs: BYTES, one element per instance (``[-1]``)."""
        names = ["image", "caption"] + (["image_path"] if self.cfg.allowed_image_root else [])
        return [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in names]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata outputs of every task (which ones a response holds depends on it)."""
        dim, k = self._dims()
        return [
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "image_embedding", "datatype": "FP32", "shape": [-1, dim]},
            {"name": "text_embedding", "datatype": "FP32", "shape": [-1, dim]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
        ]

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata, plus ``parameters``: the ``task`` request parameter and, per
        task, the inputs it needs (``required``/``optional``) and the outputs it answers."""
        head = self.loaded is not None and self.loaded.model.labels is not None
        classify_inputs = ["image", "caption"] if head else ["image"]
        tasks = {
            "score": {"required": ["image", "caption"], "outputs": ["score"]},
            "embed": {
                "required_any": ["image", "caption"],
                "outputs": ["image_embedding", "text_embedding"],
            },
            "classify": {"required": classify_inputs, "outputs": ["label", "probabilities"]},
        }
        return {
            "name": self.name,
            "versions": [self.metrics.model_version],
            "platform": "pairflow",
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": {
                "task": {"datatype": "BYTES", "default": "score", "values": list(tasks)},
                "tasks": tasks,
                "labels": list(self._labels),
                "image": "raw image bytes (binary extension, gRPC) or base64 text",
            },
        }

    def _results(self, task: Task, outs: list[Outputs]) -> list[dict[str, Any]]:
        embs: list[Embeddings] = [(img, txt) for img, txt, _ in outs]
        if task == "score":
            scores = [float(np.dot(img, txt)) for img, txt in embs]  # type: ignore[arg-type]
            self.metrics.scores(scores)
            return [{"score": s} for s in scores]
        if task == "embed":
            out: list[dict[str, Any]] = []
            for img, txt in embs:
                row: dict[str, Any] = {}
                if img is not None:
                    row["image_embedding"] = img.tolist()
                if txt is not None:
                    row["text_embedding"] = txt.tolist()
                out.append(row)
            return out
        probs = self._class_probabilities(outs)
        return [
            {
                "label": self._labels[int(p.argmax())],
                "probabilities": {lab: float(v) for lab, v in zip(self._labels, p, strict=True)},
            }
            for p in probs
        ]

    def _class_probabilities(self, outs: list[Outputs]) -> np.ndarray:
        """Softmax of the classifier's logits, or zero-shot against the label prompts."""
        logits = [lg for _, _, lg in outs]
        if all(lg is not None for lg in logits):
            return _softmax(np.stack(logits))  # type: ignore[arg-type]
        if self._label_emb is None:
            raise RuntimeError("classify: no classifier logits and no zero-shot label prompts")
        images = np.stack([img for img, _, _ in outs if img is not None])
        return _softmax(ZERO_SHOT_SCALE * images @ self._label_emb.T)

    def _v2_response(
        self,
        request: InferRequest,
        task: Task,
        results: list[dict[str, Any]],
        parameters: dict[str, str] | None = None,
    ) -> InferResponse:
        n = len(results)
        outputs: list[InferOutput] = []
        if task == "score":
            data = np.asarray([r["score"] for r in results], dtype=np.float32)
            outputs.append(InferOutput("score", [n], "FP32", data.tolist()))
        elif task == "embed":
            for key in ("image_embedding", "text_embedding"):
                rows = [r.get(key) for r in results]
                if any(r is not None for r in rows):
                    dim = len(next(r for r in rows if r is not None))
                    mat = np.asarray([r if r is not None else [0.0] * dim for r in rows])
                    outputs.append(
                        InferOutput(key, [n, dim], "FP32", mat.astype(np.float32).ravel().tolist())
                    )
        else:
            k = len(self._labels)
            probs = [[r["probabilities"][lab] for lab in self._labels] for r in results]
            outputs.append(InferOutput("label", [n], "BYTES", [r["label"] for r in results]))
            flat = np.asarray(probs, dtype=np.float32).ravel().tolist()
            outputs.append(InferOutput("probabilities", [n, k], "FP32", flat))
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            model_version=self.metrics.model_version,
            infer_outputs=outputs,
            parameters=parameters,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )
