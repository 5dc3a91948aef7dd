"""Self-test of multiarch.py: each arch's busybox is that arch's ELF, lamina's reader resolves each
platform of the sources to that platform's layers, and the amd64 image runs in the engine.

Without apt (or a reachable Debian mirror) for the arm64 busybox the tests skip, except under CI
(env CI), where they fail."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.errors import InvalidSource
from lamina.model import Platform
from lamina.sources import open_image
from lamina_tests.support.multiarch import (ARCHES, MACHINES, PlatformSources, busybox_static, elf_machine,
                                            write_platform_sources)
from lamina_tests.support.services import docker, require_docker


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> PlatformSources:
    try:
        return write_platform_sources(tmp_path_factory.mktemp("multiarch"))
    except RuntimeError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have busybox-static for {ARCHES}: {e}")
        pytest.skip(f"needs busybox-static for {ARCHES}: {e}")


@pytest.mark.parametrize("arch", ARCHES)
def test_busybox_is_its_arch(sources: PlatformSources, arch: str) -> None:
    assert elf_machine(busybox_static(arch)) == MACHINES[arch]
    assert busybox_static(arch) == busybox_static(arch)  # cached


def test_elf_machine_of_no_elf(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"#!/bin/sh\n" + b"\0" * 20)
    with pytest.raises(ValueError):
        elf_machine(tmp_path / "x")


@pytest.mark.parametrize("arch", ARCHES)
def test_each_platform_resolves_to_its_layers(sources: PlatformSources, arch: str) -> None:
    assert sources.diff_ids["amd64"] != sources.diff_ids["arm64"]
    assert sources.diff_ids["amd64"][1] != sources.diff_ids["arm64"][1]  # arch.txt differs too
    for ref in (sources.index_ref, sources.archive_ref(arch)):
        image = open_image(ref, platform=Platform.parse(sources.platform(arch)))
        assert image.platform == Platform("linux", arch), ref
        assert image.diff_ids == sources.diff_ids[arch], ref
        assert tuple(l.descriptor.digest for l in image.layers) == sources.digests[arch], ref
        assert [l.created_by for l in image.layers] == ["COPY rootfs/ /", "RUN install tool"], ref
        assert image.config["config"]["Cmd"] == ["/bin/sh", "-c", "cat /opt/tool/arch.txt"]


def test_index_has_no_other_platform(sources: PlatformSources) -> None:
    with pytest.raises(InvalidSource, match="no image for platform"):
        open_image(sources.index_ref, platform=Platform.parse("linux/s390x"))


def test_amd64_image_runs(sources: PlatformSources) -> None:
    require_docker()
    tag = sources.archive_tag("amd64")
    docker("load", "-i", str(sources.archives["amd64"]))
    try:
        assert docker("run", "--rm", "--network", "none", tag).stdout == "amd64\n"
    finally:
        docker("image", "rm", "-f", tag, check=False)
