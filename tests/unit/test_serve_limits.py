"""Request parsing and limits of the predictor: every violation is a RequestError naming it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from pairflow.serve.limits import (
    RawInstance,
    RequestError,
    check_request,
    decode_instance,
    decode_request,
    parse_v1,
    parse_v2,
)
from pairflow.serve.settings import ServeConfig


def png(size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_v1_parses_image_forms_task_and_caption() -> None:
    body = {
        "parameters": {"task": "embed"},
        "instances": [{"image": {"b64": "QUJD"}}, {"caption": "a star"}],
    }
    req = parse_v1(body)
    assert req.task == "embed"
    assert req.instances == [RawInstance(image_b64="QUJD"), RawInstance(caption="a star")]
    assert parse_v1(b'{"instances": [{"caption": "x"}], "task": "classify"}').task == "classify"
    assert parse_v1({"instances": []}).task == "score"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "expected a JSON object"),
        (b"{not json", "not valid JSON"),
        ({}, "instances: missing"),
        ({"instances": {"caption": "x"}}, "instances: expected a list"),
        ({"instances": ["x"]}, r"instances\[0\]: expected an object"),
        ({"instances": [{"caption": "x", "img": "y"}]}, r"unknown field\(s\) img"),
        ({"instances": [{"caption": 3}]}, r"instances\[0\].caption: expected a string"),
        ({"task": "detect", "instances": []}, "task: 'detect' is not one of"),
    ],
)
def test_v1_rejects_malformed_bodies(body: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_v1(body)


def test_v2_columns_become_instances_and_shapes_are_checked() -> None:
    req = parse_v2(
        [("image", "BYTES", [2], ["QUJD", b"REVG"]), ("caption", "BYTES", [2], ["a", "b"])],
        {"task": "score"},
    )
    assert [r.image_b64 for r in req.instances] == ["QUJD", None]
    assert [r.image_bytes for r in req.instances] == [None, b"REVG"]  # told apart when decoding
    assert [r.caption for r in req.instances] == ["a", "b"]
    with pytest.raises(RequestError, match="shape must be"):
        parse_v2([("caption", "BYTES", [3], ["a", "b"])], None)
    with pytest.raises(RequestError, match="lengths differ"):
        parse_v2([("caption", "BYTES", [1], ["a"]), ("image", "BYTES", [2], ["x", "y"])], None)
    with pytest.raises(RequestError, match="datatype must be BYTES"):
        parse_v2([("caption", "FP32", [1], [1.0])], None)
    with pytest.raises(RequestError, match="unknown input 'pixels'"):
        parse_v2([("pixels", "BYTES", [1], ["a"])], None)
    with pytest.raises(RequestError, match="inputs: missing"):
        parse_v2([], None)


def test_check_request_limits_and_required_fields() -> None:
    cfg = ServeConfig(max_instances=2, max_caption_chars=10, max_image_bytes=30)
    ok = {"image": "QUJD", "caption": "a star"}
    check_request(parse_v1({"instances": [ok]}), cfg)
    cases = [
        ({"instances": [ok] * 3}, "3 in one request, the limit is 2"),
        ({"instances": []}, "empty"),
        ({"instances": [{"caption": "a star"}]}, "task 'score' needs an image and a caption"),
        ({"task": "classify", "instances": [{"caption": "x"}]}, "'classify' needs an image"),
        ({"task": "embed", "instances": [{}]}, "'embed' needs an image or a caption"),
        ({"task": "embed", "instances": [{"caption": "x" * 11}]}, "11 characters, the limit"),
        ({"task": "embed", "instances": [{"caption": "  "}]}, r"caption: empty"),
        ({"task": "embed", "instances": [{"image": "A" * 80}]}, "the limit is 30"),
        (
            {"task": "embed", "instances": [{"image": "QUJD", "image_path": "a.png"}]},
            "not both",
        ),
    ]
    for body, message in cases:
        with pytest.raises(RequestError, match=message):
            check_request(parse_v1(body), cfg)


def test_decode_checks_base64_bytes_and_pixels() -> None:
    cfg = ServeConfig(max_image_pixels=40 * 30)
    pair = decode_instance(RawInstance(image_b64=b64(png()), caption="c"), 0, cfg)
    assert pair.image is not None and pair.image.size == (40, 30) and pair.caption == "c"
    with pytest.raises(RequestError, match=r"instances\[2\].image: not valid base64"):
        decode_instance(RawInstance(image_b64="%%%="), 2, cfg)
    with pytest.raises(RequestError, match="too many pixels"):
        decode_instance(RawInstance(image_b64=b64(png((41, 30)))), 0, cfg)
    with pytest.raises(RequestError, match="not_an_image"):
        decode_instance(RawInstance(image_b64=b64(b"hello, not an image")), 0, cfg)
    small = ServeConfig(max_image_bytes=50)
    with pytest.raises(RequestError, match="bytes, the limit is 50"):
        decode_instance(RawInstance(image_b64=b64(png())), 0, small)


def test_image_paths_only_under_the_allowed_root(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    req = parse_v1({"task": "classify", "instances": [{"image_path": "ok.png"}]})
    with pytest.raises(RequestError, match="paths are not accepted"):
        decode_request(req, ServeConfig())
    cfg = ServeConfig(allowed_image_root=str(root))
    assert decode_request(req, cfg)[0].image is not None
    for path in ("../secret.png", str(tmp_path / "secret.png")):
        with pytest.raises(RequestError, match="outside the allowed image root"):
            decode_instance(RawInstance(image_path=path), 0, cfg)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(RequestError, match="outside the allowed image root"):
        decode_instance(RawInstance(image_path="link.png"), 0, cfg)
    with pytest.raises(RequestError, match="not found under the allowed image root"):
        decode_instance(RawInstance(image_path="missing.png"), 0, cfg)
