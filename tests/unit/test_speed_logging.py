"""The log redactor's fast path (a line with no trigger skips the regex) redacts exactly what the regex does."""

from __future__ import annotations

import random

from server.observability.logging import _SHAPES, REDACTED, Redactor

SHAPES = [
    "Authorization: Bearer abc.def-ghi", "BEARER tok123", "oak_abcdef123", "OAK_ABCDEF123", "sk-ant-abcdefgh12",
    "SK-abcdefghij", "xai-abcdefgh12", "pk-abcdefgh12", "rk-abcdefgh12", "AIzaSyabcdefghijklmnopqrstu",
    "aizaSyabcdefghijklmnopqrstu", "AKIAABCDEFGHIJKLMNOP", "ASIAABCDEFGHIJKLMNOP", "https://x/y?key=secret1",
    "https://x/y?a=1&KEY=secret2", "\u017fk-abcdefghij",  # the long s folds onto 's' under IGNORECASE
    "\u212aey=zzz", "bearer\u00a0notspace",
]
PLAIN = ['127.0.0.1:35706 - "POST /v1/tools/bash HTTP/1.1" 200', "sandbox ready: image openanalyst/sandbox:1",
         "task-1 finished in 3 ms", "monkey=1", "ask - me", "\u00e9t\u00e9 caf\u00e9"]


def reference(text: str) -> str:
    return _SHAPES.sub(REDACTED, text)


def test_fast_path_agrees_with_the_regex_on_secret_shapes_and_plain_lines() -> None:
    """Every secret shape, in any case, is still redacted; plain lines come back unchanged."""
    redact = Redactor()
    for text in SHAPES + PLAIN:
        for variant in (text, text.upper(), text.lower(), f"pre {text} post"):
            assert redact(variant) == reference(variant), variant
    assert all(redact(text) == text for text in PLAIN[:4])
    assert REDACTED in redact("Authorization: Bearer abc.def-ghi")


def test_fast_path_agrees_with_the_regex_on_random_lines() -> None:
    """Random lines built from the triggers' pieces, ASCII and not: the same output as the regex alone."""
    pieces = ["bear", "er ", "Bearer ", "oak", "_", "sk", "-", "xai", "pk", "rk", "AI", "za", "AKIA", "ASIA", "key",
              "=", "?", "&", "abcdefgh", "0123456789ABCDEF", " ", "\u017f", "\u212a", "\u0130", "\u00e9"]
    rng = random.Random(13)
    redact = Redactor()
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        assert redact(text) == reference(text), text
