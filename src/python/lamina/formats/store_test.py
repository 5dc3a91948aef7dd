"""Tests of where blobs live: a digest becomes a path only when it is one."""
from __future__ import annotations

import pytest

from lamina.errors import InvalidSource
from lamina.formats.store import BlobDir, DirSource, blob_path


@pytest.mark.parametrize("bad", ["sha256:../../x", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256:" + "a" * 63 + "/", ""])
def test_blob_path_refuses_what_is_not_a_digest(tmp_path, bad: str) -> None:  # type: ignore[no-untyped-def]
    assert blob_path("sha256:" + "a" * 64) == "blobs/sha256/" + "a" * 64
    for call in (blob_path, DirSource(str(tmp_path)).blob_file, BlobDir(str(tmp_path)).path):
        with pytest.raises(InvalidSource, match="blob name: .* is not a sha256 digest"):
            call(bad)
