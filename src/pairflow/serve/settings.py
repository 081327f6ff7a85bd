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
    warmup_batches: int = Field(
        2, ge=0, description="Forward passes run before the model reports ready."
    )
