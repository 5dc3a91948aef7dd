"""Owns a by-hand check that the support helpers work against the real engine and registry.

Run from the repo root (needs a running engine: `source .ci/services.sh && lamina_services_up`):

    PYTHONPATH=tests/python python3 -m lamina_tests.support.selftest
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Optional, Tuple

from lamina_tests.support.images import (
    BASE_IMAGE,
    build_base_image,
    build_image,
    busybox_rootfs,
    docker_save,
    image_exists,
    saved_tar_layout,
)
from lamina_tests.support.services import DockerError, docker, docker_available, start_registry


def _get(url: str, auth: Optional[Tuple[str, str]] = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def main() -> int:
    assert docker_available(), "no Docker engine answers `docker info`"
    versions = docker("version", "--format", "{{.Client.Version}} client / {{.Server.Version}} server")
    print("docker:", versions.stdout.strip())

    with tempfile.TemporaryDirectory(prefix="lamina-selftest-") as tmp_s:
        tmp = Path(tmp_s)

        root = busybox_rootfs(tmp / "rootfs")
        assert os.readlink(root / "bin" / "sh") == "busybox"
        assert (root / "tmp").stat().st_mode & 0o1777 == 0o1777

        assert build_base_image() == BASE_IMAGE and image_exists(BASE_IMAGE)
        assert build_base_image() == BASE_IMAGE  # reuse path
        tag = "lamina-test/selftest:latest"
        build_image(
            tag,
            f"FROM {BASE_IMAGE}\nCOPY data/hello.txt /hello.txt\nRUN echo hi > /x && ls /bin | wc -l > /applets\n",
            {"data/hello.txt": b"hello from context\n"},
        )
        out = docker("run", "--rm", "--network", "none", tag, "cat", "/x", "/hello.txt").stdout
        assert out == "hi\nhello from context\n", repr(out)
        tarball = docker_save(tag, tmp / "selftest.tar")
        print("docker save layout:", saved_tar_layout(tarball), f"({tarball.stat().st_size} bytes)")

        try:
            docker("run", "--rm", "--network", "none", tag, "sh", "-c", "echo to-stderr >&2; exit 3")
        except DockerError as e:
            assert e.returncode == 3 and "to-stderr" in str(e), str(e)
        else:
            raise AssertionError("DockerError not raised")

        # Plain registry: push with the engine, then read back over HTTP and check the access log.
        with start_registry(tmp) as reg:
            assert _get(f"{reg.url}/v2/") == 200
            ref = f"{reg.host}/selftest:1"
            docker("tag", tag, ref)
            docker("push", ref)
            assert _get(f"{reg.url}/v2/selftest/manifests/1") == 200
            entries = reg.access_log_lines()
            methods = {(e.method, e.path.split("?")[0].rsplit("/", 1)[0]) for e in entries}
            assert ("PUT", "/v2/selftest/manifests") in methods, entries
            assert any(e.method == "HEAD" for e in entries), entries
            print(f"plain registry {reg.host}: {len(entries)} requests logged, e.g. {entries[-1]}")
            docker("rmi", ref)
        assert not reg.running()
        reg.stop()  # idempotent

        # Registry with htpasswd auth: 401 without credentials; docker login + push with them.
        with start_registry(tmp, htpasswd=("lamina", "s3cret")) as areg:
            assert _get(f"{areg.url}/v2/") == 401
            assert _get(f"{areg.url}/v2/", ("lamina", "wrong")) == 401
            assert _get(f"{areg.url}/v2/", ("lamina", "s3cret")) == 200
            config_dir = tmp / "docker-config"
            config_dir.mkdir()
            env = {"DOCKER_CONFIG": str(config_dir)}
            ref = f"{areg.host}/authed:1"
            docker("tag", tag, ref)
            try:
                docker("push", ref, env=env)
            except DockerError as e:
                assert "no basic auth credentials" in str(e) or "unauthorized" in str(e), str(e)
            else:
                raise AssertionError("push without login succeeded")
            docker("login", areg.host, "-u", "lamina", "--password-stdin", input="s3cret\n", env=env)
            docker("push", ref, env=env)
            assert json.loads((config_dir / "config.json").read_text())["auths"][areg.host]
            statuses = {e.status for e in areg.access_log_lines()}
            assert 401 in statuses and 201 in statuses, statuses
            print(f"auth registry {areg.host}: statuses seen {sorted(statuses)}")
            docker("rmi", ref)
        assert not areg.running()

        docker("rmi", tag)
    print("support selftest: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
