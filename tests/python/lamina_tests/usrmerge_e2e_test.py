"""End to end on a real Debian 12 base (`debootstrap --variant=minbase bookworm`, `docker import`ed),
whose /bin, /lib and /sbin are symlinks into /usr: a files layer lands through them and keeps the
directories below as they are (COPY's rules), and a layer from another image that replaces /lib
with a directory is reported. Once through `lamina compose`, once through `pants package`.

Without debootstrap or a reachable Debian mirror the tests skip, except under CI (env CI), where
they fail."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

import lamina.cli
from lamina_tests.support.debian import debian_image
from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save
from lamina_tests.support.sample_repo import SampleRepo
from lamina_tests.support.services import docker, require_docker

PREFIX = f"lamina-usrmerge-{uuid.uuid4().hex[:8]}"
TOOL = b"#!/bin/sh\necho tool-ran\n"
# What the tests ask of a composed image: /bin still a symlink, /bin/sh runs, the tool is in
# /usr/bin, /tmp still 1777.
PROBE = "readlink /bin; lamina-tool; ls /usr/bin/lamina-tool; stat -c %a /tmp; cat /tmp/note"
EXPECTED = ["usr/bin", "tool-ran", "/usr/bin/lamina-tool", "1777", "note"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """debian.tar (the Debian base) and lib.tar (busybox + a layer holding a /lib directory)."""
    require_docker()
    try:
        tag = debian_image()
    except RuntimeError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Debian base tests: {e}")
        pytest.skip(f"needs a Debian 12 rootfs: {e}")
    build_base_image()
    other = build_image(f"{PREFIX}/lib:latest", f"FROM {BASE_IMAGE}\nRUN mkdir /lib && echo other > /lib/libother.so\n")
    out = tmp_path_factory.mktemp("images")
    docker_save(tag, out / "debian.tar")
    docker_save(other, out / "lib.tar")
    return out


def _run(ref: str, script: str) -> list:
    return docker("run", "--rm", "--network", "none", ref, "/bin/sh", "-c", script).stdout.split()


def test_compose_lays_files_through_the_usr_merged_symlinks(images: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "lamina-tool").write_bytes(TOOL)
    os.chmod(tmp_path / "lamina-tool", 0o755)
    (tmp_path / "note").write_bytes(b"note\n")
    ref = f"{PREFIX}/compose:1"
    spec = {"base": f"docker-archive:{images / 'debian.tar'}",
            "files": [{"src": str(tmp_path / "lamina-tool"), "dest": "/bin/lamina-tool"},
                      {"src": str(tmp_path / "note"), "dest": "/tmp/note"}],
            "tags": [ref], "format": "docker-archive"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert lamina.cli.main(["compose", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out.tar")]) == 0
    docker("load", "-i", str(tmp_path / "out.tar"))
    assert _run(ref, PROBE) == EXPECTED


def test_package_keeps_bin_and_tmp_and_reports_a_layer_replacing_lib(images: Path,
                                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = SampleRepo(tmp_path_factory.mktemp("sample"))
    for name in ("debian.tar", "lib.tar"):
        os.link(images / name, repo.root / name)
    repo.write("app/bin/lamina-tool", TOOL.decode())
    os.chmod(repo.root / "app" / "bin" / "lamina-tool", 0o755)
    repo.write("app/tmp/note", "note\n")
    repo.write("app/bin/BUILD", f"""
files(name="tool", sources=["lamina-tool"])
composed_image(name="img", base="../../debian.tar", files=[":tool"], files_dest="/bin",
               repository="{PREFIX}/bin", image_tags=["1"])
""")
    repo.write("app/tmp/BUILD", f"""
files(name="note", sources=["note"])
composed_image(name="img", base="../../debian.tar", files=[":note"], files_dest="/tmp",
               repository="{PREFIX}/tmp", image_tags=["1"])
""")
    repo.write("app/BUILD", f"""
docker_layer(name="lib", image="../lib.tar", layer=-1)
composed_image(name="with_lib", base="../debian.tar", layers=[":lib"], repository="{PREFIX}/lib", image_tags=["1"])
""")
    built = repo.pants("package", "app/bin:img", "app/tmp:img", "app:with_lib")
    replaced = [l.strip() for l in built.stderr.splitlines() if "replaces the symlink" in l or "changes directory" in l]
    # only the layer from the busybox image is reported: it replaces Debian's /lib -> usr/lib
    (finding,) = replaced
    assert finding.startswith("warning: [1] lib.tar layer 1 (sha256:"), built.stderr
    assert "replaces the symlink /lib -> usr/lib of [0] debian.tar layer 0 (sha256:" in finding, built.stderr
    assert "with a directory: what the symlink led to is no longer found at /lib" in finding, built.stderr

    docker("load", "-i", str(repo.root / "dist" / "app.bin" / "img.tar"))
    assert _run(f"{PREFIX}/bin:1", "readlink /bin; lamina-tool; ls /usr/bin/lamina-tool") == [
        "usr/bin", "tool-ran", "/usr/bin/lamina-tool"]
    docker("load", "-i", str(repo.root / "dist" / "app.tmp" / "img.tar"))
    assert _run(f"{PREFIX}/tmp:1", "stat -c '%a %u' /tmp; cat /tmp/note") == ["1777", "0", "note"]
    # what the warning was about: with /lib a directory the loader (/lib64/ld-linux-x86-64.so.2 ->
    # /lib/x86_64-linux-gnu/...) is gone, and nothing dynamic starts
    docker("load", "-i", str(repo.root / "dist" / "app" / "with_lib.tar"))
    broken = docker("run", "--rm", "--network", "none", f"{PREFIX}/lib:1", "/bin/sh", "-c", "true", check=False)
    assert broken.returncode != 0 and "no such file or directory" in broken.stderr, broken
