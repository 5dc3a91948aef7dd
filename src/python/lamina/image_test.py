"""Tests of the Image and Layer nouns: history grouped per layer and the config's diff_ids."""
from __future__ import annotations

import pytest

from lamina.errors import InvalidSource
from lamina.image import config_diff_ids, layer_history

DIGEST = "sha256:" + "0" * 64


def _h(text: str, empty: bool = False) -> dict:
    return {"created_by": text, "empty_layer": True} if empty else {"created_by": text}


def test_layer_history_groups_empty_entries_with_the_layer_after_them() -> None:
    history = [_h("ADD /"), _h("ENV A=1", True), _h("CMD x", True), _h("RUN a"), _h("ENTRYPOINT y", True)]
    groups = layer_history({"history": history}, 2)
    assert groups == [(history[0],), (history[1], history[2], history[3])]  # trailing ENTRYPOINT dropped


@pytest.mark.parametrize(
    "history",
    [[_h("ADD /")], [_h("a"), _h("b"), _h("c")], "not a list", [_h("a"), "not an entry"]],
    ids=["too-few", "too-many", "not-list", "bad-entry"],
)
def test_layer_history_that_does_not_map_gives_every_layer_none(history: object) -> None:
    assert layer_history({"history": history}, 2) == [(), ()]


def test_config_diff_ids_checks_each_digest() -> None:
    assert config_diff_ids({"rootfs": {"diff_ids": [DIGEST]}}, "w") == [DIGEST]
    with pytest.raises(InvalidSource, match="w: config has no rootfs.diff_ids"):
        config_diff_ids({"rootfs": {}}, "w")
    with pytest.raises(InvalidSource, match="w: rootfs.diff_ids: 'sha256:zz' is not a sha256 digest"):
        config_diff_ids({"rootfs": {"diff_ids": ["sha256:zz"]}}, "w")
