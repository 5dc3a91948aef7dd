"""A JSON-aware mutator: half the time libFuzzer's byte mutations, else one change to a parsed JSON document.

Byte mutations rarely turn `"RepoTags": ["app:1"]` into `"RepoTags": true`, so readers that trust
a document's shape are found slowly. This mutator parses a JSON document in the input (a bundle
member, a registry answer's body, or the whole input), changes one node (another type, a hostile
string, deleted, duplicated, swapped with another node) and writes it back. Size tokens (`{s:N}`,
bare in the JSON) survive the round trip.
"""
from __future__ import annotations

import copy
import json
import random
import re
from typing import Any, Callable, Optional

from lamina_fuzz.bundle import SEP

_SIZE = re.compile(rb"\{s:(\d{1,2})\}")
_SIZE_BACK = re.compile(r'"\\u0000s:(\d{1,2})"')
_VALUES: tuple[Any, ...] = (None, True, False, 0, -1, 1.5, 1e400, 2 ** 64, "", "x\ny", "../../etc/passwd", "/abs",
                            "sha256:" + "0" * 64, "\u2028", "\udcff", [], {}, [1], {"a": 1}, [None], "a" * 300)


def _parse(data: bytes) -> Optional[Any]:
    try:
        return json.loads(_SIZE.sub(rb'"\\u0000s:\1"', data))
    except (ValueError, RecursionError):
        return None


def _dump(value: Any) -> bytes:
    return _SIZE_BACK.sub(r"{s:\1}", json.dumps(value, ensure_ascii=False)).encode("utf-8", "surrogatepass")


def _nodes(value: Any, out: list, parent: Any = None, key: Any = None, depth: int = 0) -> list:
    out.append((parent, key, value))
    if depth < 12:
        if isinstance(value, dict):
            for k, v in value.items():
                _nodes(v, out, value, k, depth + 1)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                _nodes(v, out, value, i, depth + 1)
    return out


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """`doc` with one node changed."""
    nodes = _nodes(doc, [])
    parent, key, value = rng.choice(nodes)
    choice = rng.randrange(6)
    if choice == 0 or parent is None:
        new: Any = rng.choice(_VALUES)
    elif choice == 1:
        new = copy.deepcopy(rng.choice(nodes)[2])  # another node's value (a copy: it may be an ancestor)
    elif choice == 2 and isinstance(value, str):
        at = rng.randrange(len(value) + 1)
        new = value[:at] + rng.choice(["\n", "../", "/", ":", "@", "\0", "\u00e9", "%", ""]) + value[at:]
    elif choice == 3 and isinstance(value, (int, float)) and not isinstance(value, bool):
        new = rng.choice([value + 1, value - 1, -value, value * 1000, 0, str(value)])
    elif choice == 4:
        if isinstance(parent, dict):
            del parent[key]
        else:
            del parent[key]
        return doc
    else:
        if isinstance(parent, list):
            parent.insert(key, value)
            return doc
        new = rng.choice(_VALUES)
    if parent is None:
        return new
    parent[key] = new
    return doc


def _mutate_document(content: bytes, rng: random.Random) -> Optional[bytes]:
    try:
        return _mutate_parsed(content, rng)
    except (ValueError, TypeError, RecursionError, UnicodeError):
        return None  # a document this mutator cannot write back: libFuzzer's mutations take over


def _mutate_parsed(content: bytes, rng: random.Random) -> Optional[bytes]:
    doc = _parse(content)
    if doc is not None:
        return _dump(mutate_json(doc, rng))
    head, sep, body = content.partition(b"\n\n")  # a registry answer: status and headers, then the body
    if sep:
        doc = _parse(body)
        if doc is not None:
            return head + sep + _dump(mutate_json(doc, rng))
    return None


def custom_mutator(default: Callable[[bytes, int], bytes]) -> Callable[[bytes, int, int], bytes]:
    """libFuzzer's custom mutator over `default` (atheris.Mutate)."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return default(data, max_size)
        records = data.split(SEP)
        order = list(range(len(records)))
        rng.shuffle(order)
        for i in order:
            header, nl, content = records[i].partition(b"\n")
            if len(records) == 1:
                header, nl, content = b"", b"", records[i]
            changed = _mutate_document(content, rng)
            if changed is not None:
                records[i] = header + nl + changed
                out = SEP.join(records)
                return out if len(out) <= max_size else default(data, max_size)
        return default(data, max_size)

    return mutate
