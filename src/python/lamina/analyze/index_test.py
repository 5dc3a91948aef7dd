"""Tests of reading layer index files: malformed ones are InvalidIndex with a one-line message."""
from __future__ import annotations

import json

import pytest

from lamina.analyze.index import FORMAT, loads
from lamina.errors import InvalidIndex


def _index(entry: dict) -> bytes:
    layer = {"source": "s", "index": 0, "digest": "sha256:" + "a" * 64, "diff_id": "sha256:" + "a" * 64,
             "entries": [entry]}
    return json.dumps({"format": FORMAT, "layers": [layer]}).encode()


def test_reads_an_entry() -> None:
    (layer,) = loads(_index({"path": "etc", "kind": "dir", "mode": 493, "uid": 0, "gid": 0}), "index.json")
    assert layer.entries[0].mode == 493


@pytest.mark.parametrize("data", [
    b"[" * 5000 + b"]" * 5000,  # RecursionError
    _index({"path": "etc", "kind": "dir", "mode": 1e400, "uid": 0, "gid": 0}),  # OverflowError: int(inf)
], ids=["nested-too-deeply", "infinite-mode"])
def test_inputs_found_by_fuzzing_are_invalid_index(data: bytes) -> None:  # found by lamina_fuzz
    with pytest.raises(InvalidIndex) as e:
        loads(data, "index.json")
    assert len(str(e.value).splitlines()) == 1
