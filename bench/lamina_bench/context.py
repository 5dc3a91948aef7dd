"""What every scenario shares: config, tools, results, scratch dir, Docker objects, source images."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lamina_bench.config import Config
from lamina_bench.env import Tools
from lamina_bench.images import DockerObjects, SourceImages
from lamina_bench.lamina_cli import LaminaCli
from lamina_bench.measure import Results


@dataclass
class Bench:
    cfg: Config
    tools: Tools
    wheels: Path
    results: Results = field(default_factory=Results)
    objects: DockerObjects = field(default_factory=DockerObjects)
    _images: Optional[SourceImages] = None

    @property
    def work(self) -> Path:
        return self.cfg.workdir

    @property
    def cli(self) -> LaminaCli:
        return LaminaCli(self.tools, self.work / "pycache")

    def source_images(self) -> SourceImages:
        """The three source images and their archives, built on first use."""
        if self._images is None:
            self._images = SourceImages(self.work / "src", self.work / "archives", self.cfg.sizes, self.objects)
            self._images.build()
        return self._images

    def link_archives(self, dest: Path) -> None:
        """Hard-link the current archives into a sample repo's directory, replacing the links of
        archives that changed and leaving the others alone: a user's rebuilt image changes its own
        archive only, and Pants' file watcher would take a replaced link for a changed file and
        hash it again."""
        images = self.source_images()
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("base", *images.names):
            link = dest / f"{name}.tar"
            if link.exists():
                if os.path.samefile(link, images.archive(name)):
                    continue
                link.unlink()
            os.link(images.archive(name), link)
