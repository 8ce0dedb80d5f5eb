"""Environment definitions: strict specs (no shell, URL, path or option smuggled in), the fragment's allowed
instructions, normalisation, and the content hash that decides what is built once."""

from __future__ import annotations

import pytest

from toolrunner.envbuild import EnvironmentInvalid, definition, validate_name
from toolrunner.envbuild.dockerfile import render
from toolrunner.envbuild.spec import content_hash


@pytest.mark.parametrize("name", ["data", "py-311", "a" * 40])
def test_good_names(name: str) -> None:
    """Lower-case names with digits and dashes, a letter first, up to 40 characters, are accepted."""
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Data", "1st", "a" * 41, "a b", "a/b", "data\n", "../x", "default "])
def test_bad_names(name: str) -> None:
    """Anything else is ENVIRONMENT_INVALID."""
    with pytest.raises(EnvironmentInvalid) as err:
        validate_name(name)
    assert err.value.code == "ENVIRONMENT_INVALID"


@pytest.mark.parametrize(("kind", "spec"), [
    ("debian", "jq"), ("debian", "libc6=2.36-9+deb12u4"), ("debian", "g++"),
    ("python", "requests"), ("python", "requests[socks]>=2.31,<3"), ("python", "zope.interface==6.1"),
    ("npm", "left-pad"), ("npm", "@scope/pkg@^1.2.0"), ("npm", "lodash@4.17.21"),
])
def test_good_specs(kind: str, spec: str) -> None:
    """Plain names with versions are accepted as written."""
    defn = definition(**{kind: [spec]})  # type: ignore[arg-type]
    assert getattr(defn, kind) == (spec,)


@pytest.mark.parametrize(("kind", "spec"), [
    ("debian", "jq; rm -rf /"), ("debian", "-o=APT::x"), ("debian", "jq\n"), ("debian", "$(id)"),
    ("debian", "./local.deb"), ("python", "pkg @ https://evil/x.whl"), ("python", "--index-url=http://x"),
    ("python", "-e ."), ("python", "pkg; python_version<'3'"), ("python", "../x"), ("python", " pkg"),
    ("npm", "git+https://x/y.git"), ("npm", "file:../x"), ("npm", "https://x/y.tgz"), ("npm", "user/repo"),
    ("npm", "--registry=http://x"), ("npm", "a@`id`"),
])
def test_bad_specs(kind: str, spec: str) -> None:
    """Shell words, URLs, paths, options, markers and stray whitespace are refused before anything runs."""
    with pytest.raises(EnvironmentInvalid):
        definition(**{kind: [spec]})  # type: ignore[arg-type]


def test_too_many_packages() -> None:
    """More than 50 packages of one kind are refused."""
    with pytest.raises(EnvironmentInvalid, match="at most 50"):
        definition(debian=[f"p{i}" for i in range(51)])


@pytest.mark.parametrize("fragment", [
    "FROM debian", "USER 1000", "USER root", "COPY --from=evil / /", "ADD http://x /x", "WORKDIR /tmp",
    "ENTRYPOINT [\"sh\"]", "CMD sh", "SHELL [\"/bin/sh\"]", "ONBUILD RUN x", "ARG X", "VOLUME /x",
    "RUN true \\\n&& true\nuser nobody", "ENV PATH=/evil:$PATH", "ENV LD_PRELOAD /x.so",
    "ENV A=1 PYTHONPATH=/x", "RUN cat <<EOF\nx\nEOF", "RUN x \\",
    # the builder expands an ENV name like a word: quotes, escapes and variables would spell a refused one
    'ENV "LD_PRELOAD"=/x.so', "ENV LD_PRE\\LOAD=/x.so", "ENV ${NOTHING}PATH=/evil", "ENV 'PATH' /evil",
    "ENV A=1 \"PYTHONPATH\"=/x",
])
def test_fragment_refused(fragment: str) -> None:
    """Only RUN, ENV and LABEL; no ENV that decides what the runner loads; no heredoc or dangling line."""
    with pytest.raises(EnvironmentInvalid):
        definition(dockerfile=fragment)


def test_fragment_allowed_and_normalised() -> None:
    """Comments, continuations and CRLF are fine; the stored text has LF line ends and no trailing spaces."""
    defn = definition(dockerfile="# setup\r\nRUN echo a \\\r\n  && echo b   \r\nENV FOO=bar\r\nLABEL x=y\r\n")
    assert definition(dockerfile="ENV JAVA_OPTS=\"-Xmx1g -Dfoo=bar\" B='x =y' C=a\\ b=c").dockerfile
    assert defn.dockerfile == "# setup\nRUN echo a \\\n  && echo b\nENV FOO=bar\nLABEL x=y"
    assert defn.instructions == ("RUN", "ENV", "LABEL")


def test_hash_is_of_the_normalised_definition_and_the_base() -> None:
    """Order and duplicates do not change the hash; the base image's id and any package do."""
    a = definition(debian=["jq", "curl", "jq"], python=["b", "a"])
    b = definition(debian=["curl", "jq"], python=["a", "b"])
    assert content_hash(a, "sha256:1") == content_hash(b, "sha256:1")
    assert content_hash(a, "sha256:1") != content_hash(a, "sha256:2")
    assert content_hash(a, "sha256:1") != content_hash(definition(debian=["jq"], python=["a", "b"]), "sha256:1")


def test_no_tenant_text_in_generated_run_lines() -> None:
    """The Dockerfile names packages nowhere: the lists travel as files; only the fragment is tenant text."""
    defn = definition(debian=["jq"], python=["oatiny==1.0"], npm=["oa-tiny-js@1.0.0"])
    text = render(defn, "sha256:abc", debs=True, pip_wheel="pip-23.2.1-py3-none-any.whl", npm=True)
    assert "jq" not in text and "oatiny" not in text and "oa-tiny" not in text
    assert text.startswith("FROM sha256:abc\n")
