"""Load a policy by preset name (``default``, ``ci``, ``trusted``) or from a TOML file path.

A bad file raises ``PolicyError`` naming the file and the offending field, so an operator can fix it without
reading a traceback. ``policy_for`` caches by name or path: policies are read once per process.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from policies.model import Policy

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
_PRESET_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class PolicyError(ValueError):
    """A policy that cannot be loaded: unknown preset, unreadable file, bad TOML or an invalid field."""

    def __init__(self, source: str, message: str, *, field: str | None = None) -> None:
        self.source = source
        self.field = field
        where = f"{source}: field {field!r}" if field else source
        super().__init__(f"{where}: {message}")


def preset_names() -> list[str]:
    """The names of the presets shipped with the server."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, str) and _PRESET_NAME.fullmatch(text):
        candidate = PRESETS_DIR / f"{text}.toml"
        if candidate.is_file():
            return candidate
        if not Path(text).exists():
            raise PolicyError(text, f"no such preset (known: {', '.join(preset_names())}) and no such file")
    return Path(text).expanduser()


def load_policy(name_or_path: str | Path) -> Policy:
    """Read and validate one policy; the file's stem names it when the file has no ``name``."""
    path = _resolve(name_or_path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(source, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(source, f"not valid TOML: {exc}") from exc
    data.setdefault("name", path.stem)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise PolicyError(source, first["msg"], field=field) from exc


@functools.lru_cache(maxsize=64)
def _cached(key: str) -> Policy:
    return load_policy(key)


def policy_for(name_or_path: str | Path) -> Policy:
    """Cached ``load_policy``: a preset name or a path, read once per process."""
    return _cached(str(name_or_path))
