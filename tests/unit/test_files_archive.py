"""Unpacking archives into a workspace directory: a compressed tar is refused at its first header past the
cap, before the rest of it is decompressed."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from server.files.archive import unpack
from server.files.errors import FilesError
from server.files.identity import Identity
from server.files.safepath import Root

pytestmark = pytest.mark.timeout(60)


class CountingReader(io.BytesIO):
    """The spool, counting the bytes the unpacker reads out of it."""

    taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def test_a_compressed_tar_past_the_cap_is_refused_at_its_first_header(tmp_path: Path) -> None:
    """A gzip tar whose first member declares more than the cap is refused after reading that header, not
    after decompressing the member (a gzip bomb would otherwise burn a thread for as long as its zeros last);
    nothing is written."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w:gz", compresslevel=1) as tf:
        data = os.urandom(8 * 1024 * 1024)  # incompressible: reading past it shows in the spool's count
        info = tarfile.TarInfo("big.bin")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    spool = CountingReader(body.getvalue())
    (tmp_path / "ws").mkdir()
    with Root.open(str(tmp_path / "ws")) as root, pytest.raises(FilesError) as refused:
        unpack(root, ["out"], spool, "tar", Identity(os.getuid(), os.getgid(), False), 1024 * 1024)
    assert refused.value.code == "ARCHIVE_TOO_LARGE"
    assert spool.taken < 1024 * 1024
    assert list((tmp_path / "ws").iterdir()) == []
