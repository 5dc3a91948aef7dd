"""Reliability: an interrupted build recovers, and many images sharing layers extract each layer once."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing.big import write_big_docker_archive
from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic
from lamina_tests.support.sample_repo import SampleRepo, completed_processes


def _descendants(pid: int) -> list:
    """Every process below `pid`. Pants starts each sandboxed process in its own session, so killing Pants' process
    group leaves them running; the test kills them too, as a machine losing power would."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def test_a_build_killed_mid_extraction_leaves_nothing_and_the_next_one_is_correct(tmp_path: Path) -> None:
    repo = SampleRepo(tmp_path / "repo")
    (repo.root / "images").mkdir()
    diff_ids = write_big_docker_archive(str(repo.root / "images" / "big.tar"), [1 << 20, 300 << 20])
    repo.write(
        "images/BUILD",
        'docker_layer(name="big", image="big.tar", layer=-1)\n'
        'composed_image(name="img", base="scratch", platform="linux/amd64", layers=[":big"])\n',
    )
    log = tmp_path / "killed.log"
    marker = tmp_path / "paused"
    # The extraction stops itself with the layer's bytes in its temporary file, not yet renamed
    # into place (cli.py _test_pause), and says so in `marker`: it is killed there, not after a guess.
    pause = f'--subprocess-environment-env-vars=+["LAMINA_TEST_PAUSE_AT=copy:{marker}"]'
    with log.open("wb") as out:
        child = subprocess.Popen(
            repo.pants_argv(pause, "package", "images:img"), cwd=repo.root, env=repo.env(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        partial = marker.read_text()
        assert partial.endswith(".tmp") and os.path.isfile(partial), partial  # inside the copy
        below = _descendants(child.pid)
        os.killpg(child.pid, signal.SIGKILL)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.wait()
    assert not (repo.root / "dist" / "images" / "img.tar").exists()

    result = repo.pants("package", "images:img")
    assert "lamina: extract layer of images:big for linux/amd64 from images/big.tar" in completed_processes(result.stderr)
    image = open_image(str(repo.root / "dist" / "images" / "img.tar"))
    assert list(image.diff_ids) == diff_ids[1:]
    assert validate(image).layers == 1


def test_twenty_images_sharing_layers_extract_each_layer_once(tmp_path: Path) -> None:
    repo = SampleRepo(tmp_path / "repo")
    images = repo.root / "images"
    images.mkdir()
    nonce = uuid.uuid4().hex  # fresh content, so nothing is a hit in this machine's Pants cache
    for name in ("a", "b", "c"):
        layers = [FakeLayer({f"{name}/{i}": f"{name}{i}{nonce}".encode() * 100}, f"RUN {name} step {i}")
                  for i in range(3)]
        write_docker_classic({f"{name}:latest": FakeImage(layers)}, str(images / f"{name}.tar"))
    layer_targets = [(f"{n}{i}", n, i) for n in ("a", "b", "c") for i in (1, 2)]
    build = [f'docker_layer(name="{t}", image="{n}.tar", layer={i})' for t, n, i in layer_targets]
    for k in range(20):
        picked = [f'":{layer_targets[(k + j) % len(layer_targets)][0]}"' for j in range(3)]
        build.append(
            f'composed_image(name="img{k}", base="a.tar", layers=[{", ".join(picked)}], env={{"K": "{k}"}})'
        )
    repo.write("images/BUILD", "\n".join(build) + "\n")
    result = repo.pants("package", "::")
    extracted = Counter(p.split(" from ")[0] for p in completed_processes(result.stderr) if p.startswith("lamina: extract"))
    for target, _, _ in layer_targets:
        assert extracted[f"lamina: extract layer of images:{target}"] == 1, extracted
    assert sum(1 for p in extracted if p.startswith("lamina: extract base image")) == 1, extracted
    assert sum(extracted.values()) == len(layer_targets) + 1, extracted
    for k in range(20):
        image = open_image(str(images.parent / "dist" / "images" / f"img{k}.tar"))
        assert len(image.layers) == 3 + 3 and validate(image).layers == 6
        assert f"K={k}" in image.config["config"]["Env"]
