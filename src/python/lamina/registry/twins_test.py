"""A layer a registry keeps compressed is pushed as that blob: the manifest names it, the config stays."""
from __future__ import annotations

import dataclasses
import json

from lamina.image import with_copies
from lamina.model import OCI_LAYER_GZIP, Descriptor
from lamina.registry.push import _blobs
from lamina.registry.retry import NO_RETRY
from lamina.registry.twins import with_registry_forms
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic

COPY = "docker://127.0.0.1:5000/src/a@sha256:" + "1" * 64


def test_the_pushed_manifest_names_the_registry_blob_and_mounts_it_from_the_source_repository(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "a.tar")
    write_docker_classic({"a:1": FakeImage([FakeLayer({"a": b"a" * 100}, "ADD a /"), FakeLayer({"b": b"b"}, "RUN b")])}, path)
    image = with_copies(open_image("docker-archive:" + path), (COPY,))
    top = image.layers[1]
    twin = dataclasses.replace(top, descriptor=Descriptor(OCI_LAYER_GZIP, "sha256:" + "2" * 64, 42), opener=None, path=None)
    pushed = with_registry_forms(image, {top.diff_id: twin})
    assert pushed.config_bytes == image.config_bytes
    layers = json.loads(pushed.manifest_bytes)["layers"]
    assert layers[0]["digest"] == image.layers[0].descriptor.digest  # not kept there: as it was
    assert (layers[1]["mediaType"], layers[1]["digest"], layers[1]["size"]) == (OCI_LAYER_GZIP, "sha256:" + "2" * 64, 42)
    assert pushed.layers[1].diff_id == top.diff_id and pushed.layers[1].verified_by == ""
    # mounted from the repository the engine pulled it from, on that registry only
    assert [b.mount_from for b in _blobs(pushed, "127.0.0.1:5000")][:2] == [("src/a",), ("src/a",)]
    assert [b.mount_from for b in _blobs(pushed, "127.0.0.1:6000")][:2] == [(), ()]


def test_copies_on_other_registries_than_the_destinations_are_not_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina.registry.transport import RegistryOptions
    from lamina.registry.twins import registry_forms

    path = str(tmp_path / "a.tar")
    write_docker_classic({"a:1": FakeImage([FakeLayer({"a": b"a"}, "ADD a /")])}, path)
    # 127.0.0.1:1 has nothing listening: asking it would warn
    image = with_copies(open_image("docker-archive:" + path), ("docker://127.0.0.1:1/src/a@sha256:" + "1" * 64,))
    warnings: list = []
    assert registry_forms(image, {"127.0.0.1:5000"}, RegistryOptions(), warn=warnings.append) == {}
    assert warnings == []
    # on a destination it is asked, and when it cannot be read that is said once, not fatal
    assert registry_forms(image, {"127.0.0.1:1"}, RegistryOptions(retry=NO_RETRY), warn=warnings.append) == {}
    assert len(warnings) == 1 and "compressed here instead" in warnings[0]
