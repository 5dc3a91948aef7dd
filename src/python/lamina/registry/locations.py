"""Which repositories of a registry hold a blob, remembered across pushes (like Docker's blob cache).

Only a hint for cross-repository mounts: a wrong or missing entry costs an upload, never
correctness. Writes are atomic (temp file, rename); a concurrent push may drop an entry.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable, Mapping, Optional

MAX_REPOS_PER_BLOB = 8
MAX_BLOBS = 20000


def default_path(environ: Mapping[str, str]) -> Optional[str]:
    base = environ.get("LAMINA_CACHE_DIR") or (
        os.path.join(environ["XDG_CACHE_HOME"], "lamina") if environ.get("XDG_CACHE_HOME") else
        os.path.join(environ["HOME"], ".cache", "lamina") if environ.get("HOME") else None
    )
    return os.path.join(base, "blob-locations.json") if base else None


class BlobLocations:
    def __init__(self, path: Optional[str]) -> None:
        self.path = path

    def _load(self) -> dict:
        if not self.path:
            return {}
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def repos(self, registry: str, digest: str) -> tuple[str, ...]:
        entry = self._load().get(registry, {}).get(digest, [])
        return tuple(r for r in entry if isinstance(r, str)) if isinstance(entry, list) else ()

    def record(self, registry: str, repo: str, digests: Iterable[str]) -> None:
        if not self.path:
            return
        data = self._load()
        blobs = data.setdefault(registry, {})
        if not isinstance(blobs, dict):
            blobs = data[registry] = {}
        for digest in digests:
            repos = [r for r in blobs.pop(digest, []) if r != repo] if isinstance(blobs.get(digest), list) else []
            blobs[digest] = [repo, *repos][:MAX_REPOS_PER_BLOB]  # most recent first; re-inserted = newest
        while len(blobs) > MAX_BLOBS:
            blobs.pop(next(iter(blobs)))
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".blob-locations-", dir=os.path.dirname(self.path))
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a hint only
