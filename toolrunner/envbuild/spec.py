"""An environment's definition: strict validation, normalisation, and the content hash that names its image.

Every spec is matched whole (``fullmatch``) against a narrow pattern: package names and versions only, never
a URL, path, option or shell word, so nothing a tenant writes can become an argument of another meaning on the
host (``apt-get``, ``pip``, ``npm`` get them after ``--``-free fixed options) or text in a ``RUN`` line (the
lists travel as files in the build context). The fragment may hold ``RUN``, ``ENV`` and ``LABEL`` only.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from toolrunner.envbuild.errors import EnvironmentInvalid

BUILDER_VERSION = "1"  # part of every hash: a change to how images are made makes new tags
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
DEBIAN_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}(=[A-Za-z0-9][A-Za-z0-9.+~:-]{0,99})?")
_PY_VERSION = r"(===?|>=|<=|~=|!=|<|>)[A-Za-z0-9][A-Za-z0-9.*+!-]{0,63}"
PYTHON_RE = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9._-]{{0,98}}[A-Za-z0-9])?(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?"
                       rf"({_PY_VERSION}(,{_PY_VERSION}){{0,4}})?")
NPM_RE = re.compile(r"(@[a-z0-9][a-z0-9._-]{0,99}/)?[a-z0-9][a-z0-9._-]{0,213}"
                    r"(@[A-Za-z0-9^~<>=*.|+ -]{1,64})?")
MAX_PACKAGES = 50
MAX_FRAGMENT = 8192
ALLOWED_INSTRUCTIONS = frozenset({"RUN", "ENV", "LABEL"})
FRAGMENT = "the Dockerfile fragment"  # every refusal of a fragment says so (a rule JSON Schema cannot state)


@dataclass(frozen=True)
class Definition:
    """What a tenant asks for, normalised: sorted, de-duplicated lists and a fragment with ``\\n`` line ends."""

    debian: tuple[str, ...] = ()
    python: tuple[str, ...] = ()
    npm: tuple[str, ...] = ()
    dockerfile: str = ""
    instructions: tuple[str, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        return not (self.debian or self.python or self.npm or self.dockerfile)

    def as_json(self) -> dict[str, object]:
        return {"debian": list(self.debian), "python": list(self.python), "npm": list(self.npm),
                "dockerfile": self.dockerfile}


def validate_name(name: str) -> str:
    """An environment name: lower-case letters, digits and ``-``, a letter first, at most 40."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise EnvironmentInvalid(f"environment name {name!r} must match {NAME_RE.pattern}")
    return name


def _specs(kind: str, items: list[str] | tuple[str, ...], pattern: re.Pattern[str]) -> tuple[str, ...]:
    if len(items) > MAX_PACKAGES:
        raise EnvironmentInvalid(f"at most {MAX_PACKAGES} {kind} packages, got {len(items)}")
    for item in items:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise EnvironmentInvalid(f"{kind} package {item!r} is not a plain name[version] "
                                     f"(no URLs, paths or options)")
    return tuple(sorted(set(items)))


def _logical_lines(text: str) -> list[str]:
    """The fragment's instructions with ``\\`` continuations joined; comments and blank lines dropped."""
    out: list[str] = []
    current = ""
    for raw in text.split("\n"):
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append((current + line).strip())
        current = ""
    if current.strip():
        raise EnvironmentInvalid(f"{FRAGMENT} ends inside a continued line")
    return out


def check_fragment(text: str) -> tuple[str, tuple[str, ...]]:
    """The fragment with normalised line ends and its instruction keywords; anything but RUN/ENV/LABEL, a
    JSON-form RUN that names no command, a heredoc or a NUL refused."""
    if len(text.encode(errors="surrogatepass")) > MAX_FRAGMENT:
        raise EnvironmentInvalid(f"{FRAGMENT} is over {MAX_FRAGMENT} bytes")
    if "\0" in text:
        raise EnvironmentInvalid(f"{FRAGMENT} contains a NUL byte")
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")).strip()
    keywords: list[str] = []
    for line in _logical_lines(text):
        keyword = line.split(None, 1)[0].upper()
        if keyword not in ALLOWED_INSTRUCTIONS:
            raise EnvironmentInvalid(f"{FRAGMENT} may not use the instruction {keyword!r} "
                                     f"(allowed: {', '.join(sorted(ALLOWED_INSTRUCTIONS))})")
        if "<<" in line and keyword == "RUN" and re.search(r"<<-?\s*['\"]?[A-Za-z_]", line):
            raise EnvironmentInvalid(f"{FRAGMENT} uses a heredoc, which the legacy builder does not support")
        if keyword == "ENV":
            _check_env(line)
        keywords.append(keyword)
    return text, tuple(keywords)


_ENV_REFUSED = re.compile(r"PATH|LD_[A-Z_]*|PYTHON[A-Z_]*|NODE_OPTIONS|OPENANALYST_[A-Z_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _words(text: str) -> list[str]:
    """ENV's arguments split as the builder's parser splits them (moby ``parseWords``): on whitespace outside
    quotes, a backslash keeping the next character with it except inside single quotes; quotes are kept."""
    words: list[str] = []
    word, quote, i = "", "", 0
    while i < len(text):
        ch = text[i]
        if not quote and ch.isspace():
            if word:
                words.append(word)
            word, i = "", i + 1
            continue
        if ch == "\\" and quote != "'" and i + 1 < len(text):
            word, i = word + text[i:i + 2], i + 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        word, i = word + ch, i + 1
    return [*words, word] if word else words


def _check_env(line: str) -> None:
    """``ENV`` may not set what decides which program starts as the runner or what it loads. Every name must
    be plain: the builder expands a name like a word, so ``"PATH"``, ``PA\\TH`` or ``${X}PATH`` set PATH."""
    body = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
    words = _words(body)
    if words and "=" not in words[0]:  # the old form, ENV name value
        names = re.split(r"[\t\v\f\r ]+", body, maxsplit=1)[:1]
    else:
        names = [word.split("=", 1)[0] for word in words]
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise EnvironmentInvalid(f"{FRAGMENT}: ENV name {name!r} is not a plain name (no quotes, escapes "
                                     f"or variables: the builder would expand them)")
        if _ENV_REFUSED.fullmatch(name):
            raise EnvironmentInvalid(f"{FRAGMENT} may not set ENV {name}: it decides what the runner starts "
                                     f"or loads")


def definition(*, debian: list[str] | tuple[str, ...] = (), python: list[str] | tuple[str, ...] = (),
               npm: list[str] | tuple[str, ...] = (), dockerfile: str = "") -> Definition:
    """Validate and normalise; raises ``EnvironmentInvalid`` with the first rule broken."""
    fragment, keywords = check_fragment(dockerfile or "")
    return Definition(_specs("Debian", debian, DEBIAN_RE), _specs("Python", python, PYTHON_RE),
                      _specs("npm", npm, NPM_RE), fragment, keywords)


def content_hash(defn: Definition, base_image_id: str, installer_digest: str = "") -> str:
    """sha256 over the normalised definition, the base image's id and the pip installer's digest: equal
    inputs, one image (docs/environments.md, why sharing across tenants is safe)."""
    doc = {"v": BUILDER_VERSION, "base": base_image_id, "pip": installer_digest if defn.python else "",
           **defn.as_json()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
