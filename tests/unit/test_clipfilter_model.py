"""Model references and ``open_model`` of a CLIP: local directories, bad references, corrupt
directories.

Uses a randomly initialised tiny CLIP saved with ``save_pretrained`` (seconds to build); the
pretrained reference model and S3/MLflow loading are covered by the integration tests.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairflow.errors import PairflowError
from pairflow.models import scratch
from pairflow.models.errors import ModelLoadError
from pairflow.models.locate import find_hf_dir, locate_model
from pairflow.models.open import open_model

CAPTIONS = [
    "two small red circles in the top left",
    "a photo of a large blue star in the center",
    "there are three small green squares in the bottom right",
    "an image showing a large yellow triangle in the top right",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scratch.save_untrained_clip(tmp_path_factory.mktemp("tiny-clip") / "m", CAPTIONS)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


def test_saved_directory_loads_like_a_hub_clip(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "preprocessor_config.json" in names or "processor_config.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    opened = open_model(str(tiny_dir))
    assert opened.path == tiny_dir and opened.kind == "clip" and opened.labels is None
    assert opened.version == f"local-{opened.digest[:12]}"
    loaded = opened.clip
    assert loaded.path == tiny_dir
    assert len(loaded.digest) == 64 and opened.digest == loaded.digest
    assert loaded.digest == open_model(str(tiny_dir)).clip.digest
    assert opened.max_text_length == loaded.max_text_length
    assert loaded.embed_dim == 64 and loaded.max_text_length == scratch.CONTEXT_LENGTH
    assert not loaded.model.training
    tok = loaded.processor.tokenizer
    ids = tok(["two small red circles"])["input_ids"][0]
    # CLIP layout: <|startoftext|> ... <|endoftext|>, the end token is the highest id
    assert ids[0] == tok.convert_tokens_to_ids(scratch.BOS_TOKEN)
    assert ids[-1] == tok.convert_tokens_to_ids(scratch.EOS_TOKEN) == len(tok) - 1
    assert loaded.model.text_model.eos_token_id == ids[-1]
    # any text tokenises (byte-level): no unknown tokens
    weird = tok(["Ünïcödé ☃ 123!"])["input_ids"][0]
    assert tok.unk_token_id not in weird[1:-1]
    assert loaded.processor.image_processor.crop_size == {"height": 64, "width": 64}


def test_reference_kinds_and_errors(tmp_path: Path, offline: None) -> None:
    hub = locate_model("openai/clip-vit-base-patch32")
    assert hub.layout == "hub" and hub.path == "openai/clip-vit-base-patch32"
    cases = {
        "": "empty model reference",
        "   ": "empty model reference",
        "http://example.com/model": "unsupported model reference scheme",
        str(tmp_path / "nope"): "model directory not found",
        "a/b/c": "model directory not found",
        "not a model!": "unknown model reference",
    }
    for ref, message in cases.items():
        with pytest.raises(ModelLoadError, match=message) as err:
            open_model(ref)
        assert "\n" not in str(err.value)
    file_ref = tmp_path / "file.txt"
    file_ref.write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        open_model(str(file_ref))


def test_hub_id_offline_is_a_clear_error(offline: None) -> None:
    with pytest.raises(PairflowError) as err:
        open_model("pairflow-test-org/no-such-clip-model")
    text = str(err.value)
    assert text.startswith("pairflow-test-org/no-such-clip-model: cannot load CLIP")
    assert "HF_HUB_OFFLINE" in text and "\n" not in text


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_directories(tmp_path: Path, tiny_dir: Path) -> None:
    no_weights = _copy(tiny_dir, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load CLIP model directory"):
        open_model(str(no_weights))

    truncated = _copy(tiny_dir, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="cannot load CLIP model directory"):
        open_model(str(truncated))

    bad_json = _copy(tiny_dir, tmp_path / "bad-json")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"unreadable config\.json"):
        open_model(str(bad_json))

    not_clip = _copy(tiny_dir, tmp_path / "not-clip")
    config = json.loads((not_clip / "config.json").read_text())
    (not_clip / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="model_type 'bert', not 'clip'"):
        open_model(str(not_clip))

    no_tokenizer = _copy(tiny_dir, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError):
        open_model(str(no_tokenizer))

    wrong_shape = _copy(tiny_dir, tmp_path / "wrong-shape")
    config = json.loads((wrong_shape / "config.json").read_text())
    config["projection_dim"] = 32
    (wrong_shape / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"do not match|cannot load"):
        open_model(str(wrong_shape))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        open_model(str(empty))


def test_find_hf_dir_layouts(tmp_path: Path, tiny_dir: Path) -> None:
    root = tmp_path / "artifacts"
    _copy(tiny_dir, root / "hf")
    (root / "MLmodel").write_text("flavors: {}\n")
    assert find_hf_dir(root, "ref") == root / "hf"
    assert find_hf_dir(tiny_dir, "ref") == tiny_dir
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "config.json").write_text("{}")
    (pickles / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        find_hf_dir(pickles, "ref")
    nothing = tmp_path / "nothing"
    (nothing / "sub").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="no Hugging Face model directory"):
        find_hf_dir(nothing, "ref")
