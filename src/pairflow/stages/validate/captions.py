"""Caption and label checks: each failure is a reason code and a detail."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pairflow.config import ValidateConfig

_WS = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class CaptionRules:
    """The caption/label part of :class:`ValidateConfig`, with the blocked words compiled."""

    min_chars: int
    max_chars: int
    min_tokens: int
    max_tokens: int
    min_printable: float
    min_letters: float
    blocked: re.Pattern[str] | None
    allowed_labels: frozenset[str] | None

    @classmethod
    def from_config(cls, cfg: ValidateConfig) -> CaptionRules:
        words = [w.strip().casefold() for w in cfg.blocked_words if w.strip()]
        blocked = (
            re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
            if words
            else None
        )
        labels = frozenset(cfg.allowed_labels) if cfg.allowed_labels is not None else None
        return cls(
            cfg.min_caption_chars,
            cfg.max_caption_chars,
            cfg.min_caption_tokens,
            cfg.max_caption_tokens,
            cfg.min_printable_ratio,
            cfg.min_letter_ratio,
            blocked,
            labels,
        )


_NOT_ASCII_LETTER = re.compile(r"[^A-Za-z ]+")


def _letter_share(text: str) -> float:
    """Share of letters (any script) and spaces in ``text``; ASCII takes a C fast path."""
    if text.isascii():
        return (len(text) - sum(map(len, _NOT_ASCII_LETTER.findall(text)))) / len(text)
    hits = sum(ch == " " or unicodedata.category(ch)[0] == "L" for ch in text)
    return hits / len(text)


def normalize_whitespace(text: str) -> str:
    return _WS.sub(" ", text).strip()


def check_caption(caption: object, label: object, rules: CaptionRules) -> tuple[str, str] | None:
    """``(reason, detail)`` for the first failed check, or None when the caption is usable."""
    if caption is None or (isinstance(caption, float) and caption != caption):
        return "missing_caption", "caption is null"
    text = str(caption)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return "caption_not_utf8", f"undecodable bytes at char {exc.start}"
    if "\x00" in text:
        return "caption_has_nul", f"NUL byte at char {text.index(chr(0))}"
    if len(text) > 4 * rules.max_chars:  # don't normalise megabytes of text
        return "caption_too_long", f"{len(text)} chars > {rules.max_chars}"
    norm = normalize_whitespace(text)
    if not norm:
        return "missing_caption", f"caption is blank ({len(text)} whitespace chars)"
    if len(norm) < rules.min_chars:
        return "caption_too_short", f"{len(norm)} chars < {rules.min_chars}"
    if len(norm) > rules.max_chars:
        return "caption_too_long", f"{len(norm)} chars > {rules.max_chars}"
    printable = 1.0 if norm.isprintable() else sum(map(str.isprintable, norm)) / len(norm)
    if printable < rules.min_printable:
        return "caption_unprintable", f"printable share {printable:.2f} < {rules.min_printable}"
    letters = _letter_share(norm)
    if letters < rules.min_letters:
        return "caption_not_text", f"letter share {letters:.2f} < {rules.min_letters}"
    tokens = len(_TOKEN.findall(norm))
    if tokens < rules.min_tokens:
        return "caption_too_few_tokens", f"{tokens} tokens < {rules.min_tokens}"
    if tokens > rules.max_tokens:
        return "caption_too_many_tokens", f"{tokens} tokens > {rules.max_tokens}"
    if rules.blocked is not None:
        hit = rules.blocked.search(norm)
        if hit:
            return "blocked_word", f"contains {hit.group(0)!r}"
    if rules.allowed_labels is not None:
        if label is None or (isinstance(label, float) and label != label):
            return "label_missing", "label is null but labels are required"
        if str(label) not in rules.allowed_labels:
            return "label_not_allowed", f"label {label!r} not in {sorted(rules.allowed_labels)}"
    return None
