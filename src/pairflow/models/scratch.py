"""An untrained CLIP built from config: a byte-level BPE tokenizer trained on the captions
(CLIP's normaliser, pre-tokeniser and vocabulary layout) and a tiny ViT/text transformer.

``train`` starts from it when no base model is configured; the demo pretrains its reference
CLIP from it (:mod:`pairflow.demo.reference_clip`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pairflow.models.clip import BpeFiles, merge_pairs, save_clip

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer


IMAGE_SIZE = 64


PATCH_SIZE = 8


CONTEXT_LENGTH = 77


BOS_TOKEN = "<|startoftext|>"


EOS_TOKEN = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def train_bpe(captions: Iterable[str], vocab_size: int = 1024) -> BpeFiles:
    """Train a byte-level BPE with CLIP's normalisation and word-end ``</w>`` suffix."""
    # lazy: tokenizers (slow to import); only this path needs it
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    backend = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(list(captions), trainer)
    merges = merge_pairs(json.loads(backend.to_str())["model"]["merges"])
    # OpenAI's layout: bytes, bytes + "</w>", merge results in merge order, specials last.
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return BpeFiles(vocab, merges)


def build_processor(captions: Iterable[str], image_size: int = IMAGE_SIZE) -> CLIPProcessor:
    """A CLIPProcessor: a BPE tokenizer trained on ``captions`` + an ``image_size`` px image
    processor (resize shortest edge, centre crop, CLIP mean/std)."""
    # lazy: transformers (slow to import); only this path needs it
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    bpe = train_bpe(captions)
    with tempfile.TemporaryDirectory(prefix="pairflow-bpe-") as tmp:
        vocab, merges = bpe.write(Path(tmp))
        tokenizer = CLIPTokenizer(
            vocab=str(vocab), merges=str(merges), model_max_length=CONTEXT_LENGTH
        )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor: CLIPProcessor = CLIPProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor, tokenizer=tokenizer
    )
    return processor


def _token_id(tokenizer: CLIPTokenizer, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(value, int):
        raise TypeError(f"token {token!r} has no single id")
    return value


def tiny_clip(
    tokenizer: CLIPTokenizer, *, image_size: int = IMAGE_SIZE, seed: int = 0
) -> CLIPModel:
    """A randomly initialised tiny CLIP: 64-wide, 2 layers per tower, patch 8, 64-d joint."""
    # lazy: transformers (slow to import); only this path needs it
    from transformers import CLIPConfig, CLIPModel

    eos = _token_id(tokenizer, EOS_TOKEN)
    tower: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": CONTEXT_LENGTH,
            "bos_token_id": _token_id(tokenizer, BOS_TOKEN),
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={**tower, "image_size": image_size, "patch_size": PATCH_SIZE},
        projection_dim=64,
    )
    torch.manual_seed(seed)
    return CLIPModel(config)


def save_untrained_clip(out_dir: str | Path, captions: Sequence[str], seed: int = 0) -> Path:
    """Save a randomly initialised tiny CLIP + processor (fast; for tests of the plumbing)."""
    processor = build_processor(captions)
    return save_clip(out_dir, tiny_clip(processor.tokenizer, seed=seed), processor)


# CLIP's own pre-tokenisation (transformers' CLIPTokenizer uses the same expression).
_CLIP_SPLIT = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)
