"""Config section of the model server (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from pydantic import Field

from pairflow.config_fields import Section


class ServeConfig(Section):
    """The predictor: batching, request limits and threads (used locally and in the image)."""

    model_name: str = Field(
        "pairflow", description="Name in the URLs: /v1/models/NAME:predict, /v2/models/NAME/infer."
    )
    batching: bool = Field(
        True, description="Coalesce concurrent requests into micro-batches (off: one pass each)."
    )
    max_batch_size: int = Field(32, ge=1, description="Largest micro-batch the predictor runs.")
    max_batch_delay_ms: float = Field(
        5.0, ge=0, description="Longest a request waits for its micro-batch to fill."
    )
    torch_threads: int = Field(
        0, ge=0, description="Intra-op threads of the forward pass; 0 = CPUs - 1 (at least 1)."
    )
    decode_threads: int = Field(
        2, ge=1, description="Threads decoding and checking request images off the event loop."
    )
    inline_decode_chars: int = Field(
        65_536,
        ge=0,
        description="Requests whose base64 images total at most this many characters are "
        "decoded on the event loop (cheaper than a thread hop); larger ones on decode threads.",
    )
    max_instances: int = Field(64, ge=1, description="Most instances (pairs) in one request.")
    max_image_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="Largest encoded image accepted (bytes, after base64)."
    )
    max_image_pixels: int = Field(
        16_000_000, ge=1, description="Largest declared image size accepted (width x height)."
    )
    max_caption_chars: int = Field(1000, ge=1, description="Longest caption accepted.")
    max_request_pixels: int = Field(
        64_000_000,
        ge=1,
        description="Most decoded pixels of all images of one request together (small files "
        "that decode to many pixels cannot fill memory within the per-image limits).",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body (JSON or binary, HTTP and gRPC), refused with 413 "
        "(gRPC: RESOURCE_EXHAUSTED) while it is read, before any parsing.",
    )
    max_concurrency: int = Field(
        8,
        ge=1,
        description="Inference requests parsed, decoded and run at once (the micro-batcher "
        "coalesces them); more wait in the queue.",
    )
    max_queue: int = Field(
        32,
        ge=0,
        description="Inference requests that may wait for a slot; beyond it requests are "
        "answered 503 at once. Bodies held <= (max_concurrency + max_queue) x max_body_bytes.",
    )
    queue_timeout_s: float = Field(
        10.0, gt=0, description="Longest a request waits in the queue before a 503."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection must deliver a request's headers within this time (slow "
        "clients are answered 408 and disconnected); also the idle limit before a first request.",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request body must arrive within this time (else 408)."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections and tasks beyond which uvicorn answers 503."
    )
    grace_period_s: int = Field(
        20,
        ge=1,
        description="On SIGTERM: seconds in-flight requests get to finish (keep it below the "
        "pod's terminationGracePeriodSeconds).",
    )
    allowed_image_root: str = Field(
        "",
        description="Images may be given as paths only under this directory; empty: paths refused.",
    )
    labels: list[str] = Field(
        default_factory=lambda: ["circle", "square", "triangle", "star"],
        description="Classes of zero-shot classification (when the model has no classifier head).",
    )
    label_prompt: str = Field(
        "a {}", description="Caption template of a class for zero-shot classification."
    )
    request_logs: bool = Field(
        False, description="Log a line per request (uvicorn access log, KServe timing trace)."
    )
    mark_for_logger: bool = Field(
        False,
        description="Mark sampled responses (monitor.sample_rate) with the monitor payload that "
        "pairflow monitor-sink joins to the logged request: on with KServe's payload logger "
        "(spec.predictor.logger); monitor.sink_url turns it on for local runs.",
    )
    warmup_batches: int = Field(
        2, ge=0, description="Forward passes run before the model reports ready."
    )
