"""The bench's source images: random payloads, built FROM a busybox base and `docker save`d."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Set, Tuple

from lamina_bench.config import MB, Sizes
from lamina_bench.measure import log
from lamina_tests.support.images import build_base_image, docker_save
from lamina_tests.support.services import docker

PREFIX = "lamina-bench"
BASE_TAG = f"{PREFIX}/busybox:latest"
CHUNK = 1 << 20


def write_random_file(path: Path, size: int) -> None:
    """`size` bytes of os.urandom, written in chunks (never whole in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n


def write_small_files(root: Path, count: int, size: int, per_dir: int = 100) -> None:
    for i in range(count):
        path = root / f"d{i // per_dir:03d}" / f"f{i:05d}.bin"
        if i % per_dir == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


@dataclass
class DockerObjects:
    """Every image tag and ID the bench made, so cleanup removes exactly those."""

    tags: Set[str] = field(default_factory=set)
    ids: Set[str] = field(default_factory=set)

    def build(self, tag: str, context: Path) -> str:
        docker("build", "--network", "none", "--force-rm", "-q", "-t", tag, str(context))
        return self.note(tag)

    def note(self, tag: str) -> str:
        self.tags.add(tag)
        image_id = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
        if image_id:
            self.ids.add(image_id)
        return image_id

    def remove_untagged(self) -> None:
        """Delete the images the bench made that no tag names any more (older builds of a tag),
        with their untagged parents: the legacy builder would use them as build cache.

        Never `rm -f` an ID: the builder's cache can hand the bench an image that someone else's
        tag also names, and that image must stay."""
        for image_id in sorted(self.ids):
            tags = docker("image", "inspect", "--format", "{{len .RepoTags}}", image_id, check=False).stdout.strip()
            if tags in ("0", ""):
                docker("image", "rm", image_id, check=False)
                self.ids.discard(image_id)

    def remove(self) -> None:
        """Untag everything the bench tagged, then delete what that left untagged."""
        if self.tags:
            docker("image", "rm", *sorted(self.tags), check=False)
        self.tags.clear()
        self.remove_untagged()


@dataclass
class SourceImages:
    """base + three images (img1..img3), each the base plus one COPY layer of random files."""

    root: Path  # build contexts live here
    archive_dir: Path  # base.tar, img1.tar, ... live here
    sizes: Sizes
    objects: DockerObjects
    version: int = 0
    tags: Dict[str, str] = field(default_factory=dict)
    prefix: str = PREFIX  # the images are tagged <prefix>/img1:latest ...; a second set needs its own

    @property
    def names(self) -> Tuple[str, ...]:
        return ("img1", "img2", "img3")

    def archive(self, name: str) -> Path:
        return self.archive_dir / f"{name}.tar"

    def build(self, save: bool = True) -> None:
        """Build the images; `save`: also `docker save` them to their archives."""
        start = time.monotonic()
        build_base_image(BASE_TAG)
        self.objects.note(BASE_TAG)
        if save:
            docker_save(BASE_TAG, self.archive("base"))
        for name, size_mb in zip(self.names, self.sizes.layer_mb):
            ctx = self.root / name
            write_random_file(ctx / "payload" / "data.bin", size_mb * MB)
            if name == "img3":
                write_small_files(ctx / "payload" / "small", self.sizes.small_files, self.sizes.small_file_bytes)
                (ctx / "payload" / "version.txt").write_text("0\n")
            (ctx / "Dockerfile").write_text(f"FROM {BASE_TAG}\nCOPY payload/ /opt/{name}/\n")
            self.tags[name] = f"{self.prefix}/{name}:latest"
            self.objects.build(self.tags[name], ctx)
            if save:
                docker_save(self.tags[name], self.archive(name))
        if save:
            log(f"bench: source images built and saved in {time.monotonic() - start:.0f} s "
                f"({sum(self.archive(n).stat().st_size for n in ('base', *self.names)) / MB:.0f} MB of archives)")
        else:
            log(f"bench: source images ({'+'.join(map(str, self.sizes.layer_mb))} MB) built in "
                f"{time.monotonic() - start:.0f} s")

    def change_third(self) -> Tuple[float, float]:
        """Rebuild img3 with one small file changed (a new 100 MB layer) and re-save its archive.

        Returns (build seconds, save seconds)."""
        self.version += 1
        ctx = self.root / "img3"
        (ctx / "payload" / "version.txt").write_text(f"{self.version}\n")
        start = time.perf_counter()
        self.objects.build(self.tags["img3"], ctx)
        built = time.perf_counter()
        tmp = self.archive("img3").with_suffix(".tar.tmp")
        docker_save(self.tags["img3"], tmp)
        os.replace(tmp, self.archive("img3"))
        return built - start, time.perf_counter() - built

    def renew(self, save: bool = True) -> float:
        """All three images rebuilt with new random payloads (new layers, new IDs), re-saved to
        their archives when `save`: content nothing has seen yet. Returns the seconds it took."""
        start = time.perf_counter()
        for name, size_mb in zip(self.names, self.sizes.layer_mb):
            write_random_file(self.root / name / "payload" / "data.bin", size_mb * MB)
            self.objects.build(self.tags[name], self.root / name)
            if save:
                tmp = self.archive(name).with_suffix(".tar.tmp")
                docker_save(self.tags[name], tmp)
                os.replace(tmp, self.archive(name))
        self.objects.remove_untagged()
        return time.perf_counter() - start

    def save_one(self, name: str, dest: Path) -> float:
        """`docker save` one image to `dest/<name>.tar`; seconds."""
        start = time.perf_counter()
        docker_save(self.tags[name], dest / f"{name}.tar")
        return time.perf_counter() - start

    def save_all(self, dest: Path) -> float:
        """`docker save` the three images to `dest` (what the seed's recipe starts with); seconds."""
        start = time.perf_counter()
        for name in self.names:
            docker_save(self.tags[name], dest / f"{name}.tar")
        return time.perf_counter() - start


def archive_layers(archive: Path) -> List[str]:
    """The layer member names of a classic `docker save` archive, base first."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return list(json.load(member)[0]["Layers"])


def extract_layer(archive: Path, index: int, dest: Path) -> int:
    """Copy one layer tar out of a `docker save` archive to `dest`; returns its size."""
    name = archive_layers(archive)[index]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        src = tar.extractfile(name)
        assert src is not None
        with open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    return dest.stat().st_size


def layer_diff_ids(archive: Path) -> List[str]:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return list(config["rootfs"]["diff_ids"])
