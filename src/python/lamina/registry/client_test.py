"""Tests of registry client answers that are malformed: a tag 404 whose tags list cannot be read."""
from __future__ import annotations

import pytest

from lamina.registry.client import RegistryClient
from lamina.registry.errors import NotFound
from lamina.registry.reference import parse_reference
from lamina.registry.transport import RegistryOptions, Reply


class _Transport:
    host = "registry.test"

    def __init__(self, tags_body: bytes) -> None:
        self._tags_body = tags_body

    def request(self, method: str, path: str, **_: object) -> Reply:
        if path.endswith("/tags/list?n=100"):
            return Reply(200, {}, self._tags_body)
        return Reply(404, {}, b"")


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b"not json", b'{"tags": [1, "v2"]}'],
                         ids=["nested-too-deeply", "not-json", "mixed-tags"])
def test_a_missing_tag_is_not_found_whatever_the_tags_list_says(body: bytes) -> None:  # found by lamina_fuzz
    client = RegistryClient("registry.test", RegistryOptions(), _Transport(body))  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no manifest for tag 1"):
        client.get_manifest(parse_reference("registry.test/team/app:1"))


def test_tags_with_a_newline_are_shown_escaped() -> None:  # found by lamina_fuzz: a two-line error
    client = RegistryClient("registry.test", RegistryOptions(), _Transport(b'{"tags": ["\\n2"]}'))  # type: ignore[arg-type]
    with pytest.raises(NotFound) as e:
        client.get_manifest(parse_reference("registry.test/team/app:1"))
    assert len(str(e.value).splitlines()) == 1 and "it has tags '\\n2'" in str(e.value)
