"""Seed inputs for every target, made by code: small valid archives, layouts, layers, ELF files, JSON."""
from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import struct
import tarfile
import tempfile
from typing import Callable, Sequence

from lamina_fuzz.bundle import decode, encode, write_tar

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
LAYER = {"none": "application/vnd.oci.image.layer.v1.tar", "gz": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zst": "application/vnd.oci.image.layer.v1.tar+zstd"}
REF_NAME = "org.opencontainers.image.ref.name"
BOMB = 8 << 20  # zeros after a layer's last header: 8 MB from 8 KB of gzip, to be read in bounded memory


# -- ELF files and layer tars ----------------------------------------------------------------------


def elf_file(bits: int = 64, endian: str = "<", interp: str = "/lib64/ld-linux-x86-64.so.2",
             needed: Sequence[str] = ("libc.so.6",), soname: str = "", runpath: str = "") -> bytes:
    """A tiny ELF file: one PT_LOAD mapping all of it, PT_INTERP, PT_DYNAMIC and its strings."""
    eh, ph = (64, 56) if bits == 64 else (52, 32)
    strings = bytearray(b"\0")

    def add(text: str) -> int:
        strings.extend(text.encode() + b"\0")
        return len(strings) - len(text) - 1

    dyn = [(1, add(n)) for n in needed] + ([(14, add(soname))] if soname else []) + ([(29, add(runpath))] if runpath else [])
    interp_bytes = interp.encode() + b"\0" if interp else b""
    phnum = 3 if interp else 2
    interp_off = eh + phnum * ph
    strtab_off = interp_off + len(interp_bytes)
    dyn_off = strtab_off + len(strings)
    dyn += [(5, 0x400000 + strtab_off), (10, len(strings)), (0, 0)]
    dynamic = b"".join(struct.pack(endian + ("qQ" if bits == 64 else "iI"), t, v) for t, v in dyn)
    total = dyn_off + len(dynamic)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if endian == "<" else 2, 1]) + b"\0" * 9
    if bits == 64:
        header = ident + struct.pack(endian + "HHIQQQIHHHHHH", 3, 62, 1, 0, eh, 0, 0, eh, ph, phnum, 64, 0, 0)
    else:
        header = ident + struct.pack(endian + "HHIIIIIHHHHHH", 3, 40, 1, 0, eh, 0, 0, eh, ph, phnum, 40, 0, 0)

    def phdr(kind: int, off: int, size: int) -> bytes:
        if bits == 64:
            return struct.pack(endian + "IIQQQQQQ", kind, 5, off, 0x400000 + off, 0x400000 + off, size, size, 0x1000)
        return struct.pack(endian + "IIIIIIII", kind, off, 0x400000 + off, 0x400000 + off, size, size, 5, 0x1000)

    phdrs = phdr(1, 0, total) + (phdr(3, interp_off, len(interp_bytes)) if interp else b"") + phdr(2, dyn_off, len(dynamic))
    return header + phdrs + interp_bytes + bytes(strings) + dynamic


def tar_bytes(entries: Sequence[tuple[str, object]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar: bytes values are files, None directories, '->X' symlinks, '=>X' hard links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, value in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if value is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(value, str):
                info.type = tarfile.SYMTYPE if value.startswith("->") else tarfile.LNKTYPE
                info.linkname = value[2:]
                tf.addfile(info)
            else:
                assert isinstance(value, bytes)
                info.size, info.mode = len(value), 0o755
                tf.addfile(info, io.BytesIO(value))
    data = buf.getvalue()
    end = -(-len(data.rstrip(b"\0")) // 512) * 512  # tarfile pads to 10 KB; small seeds mutate better
    return data[:end] + b"\0" * 1024


def layers() -> list[bytes]:
    """A few layer tars covering every entry kind the walker and scanner tell apart."""
    return [
        tar_bytes([("etc/", None), ("etc/os-release", b"ID=fuzz\n"), ("etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n"),
                   ("bin/", None), ("bin/sh", elf_file()), ("lib/libc.so.6", elf_file(interp="", needed=(), soname="libc.so.6"))]),
        tar_bytes([("./usr/", None), ("./usr/bin/tool", b"#!/bin/sh\n"), ("./usr/bin/link", "->tool"),
                   ("./usr/bin/hard", "=>usr/bin/tool"), ("./etc/.wh.os-release", b""), ("./var/.wh..wh..opq", b"")]),
        tar_bytes([("a" * 120 + "/long-name-" + "b" * 60, b"x" * 600), ("app/big32", elf_file(32, ">", runpath="$ORIGIN"))],
                  tarfile.GNU_FORMAT),
        tar_bytes([("usr/lib/x86_64-linux-gnu/libz.so.1", elf_file(interp="", needed=("libc.so.6",), soname="libz.so.1"))],
                  tarfile.USTAR_FORMAT),
    ]


def tar_formats() -> list[bytes]:
    """Small tars using each format's extensions, for the differential check of the tar reader:
    GNU long names, long links and base-256 numbers, PAX global and extended headers (long
    link, big ids, non-UTF-8 names), devices, fifos and contiguous files, v7-style headers."""
    def infos() -> list[tuple[tarfile.TarInfo, bytes]]:
        out = []
        for name, kind, data, attrs in [
            ("d/", tarfile.DIRTYPE, b"", {}), ("d/" + "n" * 110, tarfile.REGTYPE, b"long", {"uid": 3_000_000}),
            ("d/l", tarfile.SYMTYPE, b"", {"linkname": "t" * 120}), ("d/h", tarfile.LNKTYPE, b"", {"linkname": "d/x"}),
            ("d/\udcff\u00e9", tarfile.CONTTYPE, b"c", {"gid": 1 << 40}), ("dev/null", tarfile.CHRTYPE, b"", {"devmajor": 1, "devminor": 3}),
            ("dev/p", tarfile.FIFOTYPE, b"", {"mtime": -1}),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), 0
            for key, value in attrs.items():
                setattr(info, key, value)
            out.append((info, data))
        return out

    seeds = []
    for fmt, headers in ((tarfile.GNU_FORMAT, None), (tarfile.PAX_FORMAT, {"comment": "g", "uid": "5"})):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=headers, errors="surrogateescape") as tf:  # type: ignore[call-overload]
            for info, data in infos():
                tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
        data = buf.getvalue()
        seeds.append(data[:-(-len(data.rstrip(b"\0")) // 512) * 512] + b"\0" * 1024)
    v7 = bytearray(512)
    v7[0:4], v7[100:108], v7[124:136], v7[156] = b"old/", b"0000755\0", b"00000000000\0", 0
    v7[148:156] = b"%06o\0 " % (sum(v7) + 8 * 32)
    seeds.append(bytes(v7) + b"\0" * 1024)
    return seeds


# -- image sources as bundles ----------------------------------------------------------------------


def _config(diff_ids: Sequence[str], arch: str = "amd64") -> bytes:
    history = [{"created_by": f"layer {i}"} for i in range(len(diff_ids))] + [{"created_by": "CMD", "empty_layer": True}]
    return json.dumps({"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                       "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}, "history": history}).encode()


def _json(value: object) -> bytes:
    """JSON whose "{s:N}" strings become bare size tokens (numbers once resolved)."""
    return re.sub(r'"(\{s:\d+\})"', r"\1", json.dumps(value)).encode()


def _blob_name(kind: str, n: int) -> str:
    return "blobs/sha256/{h:%d}" % n


def _image_members(tars: Sequence[bytes], compressions: Sequence[str], base: int = 0, arch: str = "amd64",
                   media: str = OCI_MANIFEST, name: Callable[[str, int], str] = _blob_name) -> list[tuple[str, bytes]]:
    """Layers, config and manifest (last) of one image, numbered from member `base` on."""
    members = [(name("layer", base + i) + (f" |{c}" if c != "none" else ""), t)
               for i, (t, c) in enumerate(zip(tars, compressions))]
    n = base + len(members)
    members.append((name("config", n), _config(["{u:%d}" % (base + i) for i in range(len(tars))], arch)))
    manifest = {"schemaVersion": 2, "mediaType": media,
                "config": {"mediaType": OCI_CONFIG, "digest": "{d:%d}" % n, "size": "{s:%d}" % n},
                "layers": [{"mediaType": LAYER[c], "digest": "{d:%d}" % (base + i), "size": "{s:%d}" % (base + i)}
                           for i, c in enumerate(compressions)]}
    members.append((name("manifest", n + 1), _json(manifest)))
    return members


def docker_classic(tars: Sequence[bytes], compressions: Sequence[str], tags: Sequence[str] = ("app:1",)) -> bytes:
    members = [(f"layer{i}/layer.tar" + (f" |{c}" if c != "none" else ""), t)
               for i, (t, c) in enumerate(zip(tars, compressions))]
    n = len(members)
    members.append(("{h:%d}.json" % n, _config(["{u:%d}" % i for i in range(n)])))
    manifest = [{"Config": "{h:%d}.json" % n, "RepoTags": list(tags), "Layers": [f"layer{i}/layer.tar" for i in range(n)]}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    return encode(members)


def _index(entries: Sequence[dict]) -> bytes:
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)})


def _entry(n: int, media: str = OCI_MANIFEST, tag: str = "", arch: str = "") -> dict:
    entry: dict = {"mediaType": media, "digest": "{d:%d}" % n, "size": "{s:%d}" % n}
    if tag:
        entry["annotations"] = {REF_NAME: tag}
    if arch:
        entry["platform"] = {"os": "linux", "architecture": arch}
    return entry


_LAYOUT = ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')


def oci_layout(tars: Sequence[bytes], compressions: Sequence[str], tag: str = "1", docker_manifest: bool = False) -> bytes:
    members = _image_members(tars, compressions)
    m = len(members) - 1
    members += [("index.json", _index([_entry(m, tag=tag)])), _LAYOUT]
    if docker_manifest:  # Docker 25+'s docker save: an OCI layout with manifest.json beside it
        layer_names = ["blobs/sha256/{h:%d}" % i for i in range(len(tars))]
        members.append(("manifest.json", json.dumps([{"Config": "blobs/sha256/{h:%d}" % (m - 1), "RepoTags": ["app:1"],
                                                      "Layers": layer_names}]).encode()))
    return encode(members)


def oci_multi(tars: Sequence[bytes], nested: bool) -> bytes:
    """Two platforms' images (amd64 and arm64) and an attestation entry, behind an index blob when `nested`."""
    members = _image_members(tars[:1], ["gz"])
    first = len(members) - 1
    members += _image_members(tars[1:2], ["none"], base=len(members), arch="arm64")
    second = len(members) - 1
    entries = [_entry(first, arch="amd64"), _entry(second, arch="arm64"),
               {"mediaType": OCI_MANIFEST, "digest": "{d:%d}" % first, "size": "{s:%d}" % first,
                "platform": {"os": "unknown", "architecture": "unknown"}}]
    if nested:
        members.append(("blobs/sha256/{h:%d}" % len(members), _index(entries)))
        entries = [_entry(len(members) - 1, media=OCI_INDEX, tag="multi")]
    members += [("index.json", _index(entries)), _LAYOUT]
    return encode(members)


def bundle_dir(tars: Sequence[bytes]) -> bytes:
    """A lamina bundle (extract's output): a layout holding only its selected layer, with lamina-selection.json."""
    members = _image_members(tars[:2], ["gz", "none"], name=lambda k, n: ("skipped/{h:%d}" if n == 0 else "blobs/sha256/{h:%d}") % n)
    m = len(members) - 1
    selection = {"source": "docker-archive:app.tar", "selector": "1", "platform": "linux/amd64",
                 "layers": [{"index": 1, "diff_id": "{u:1}", "created_by": "layer 1",
                             "descriptor": {"mediaType": LAYER["none"], "digest": "{d:1}", "size": "{s:1}"}}]}
    members += [("index.json", _index([_entry(m)])), _LAYOUT, ("lamina-selection.json", _json(selection))]
    return encode(members)


def symlinked_layout(tars: Sequence[bytes]) -> bytes:
    """A layout whose blobs are symlinks to files elsewhere in it, beside one to /etc/hostname."""
    members = _image_members(tars[:1], ["none"], name=lambda k, n: "store/%s" % k)
    members += [("blobs/sha256/{h:0} -> ../../store/layer", b""), ("blobs/sha256/{h:1} -> ../../store/config", b""),
                ("blobs/sha256/%s -> /etc/hostname" % ("0" * 64), b""),
                ("blobs/sha256/{h:2} -> ../../store/manifest", b""), ("index.json", _index([_entry(2)])), _LAYOUT]
    return encode(members)


# -- registries ------------------------------------------------------------------------------------


def _answer(status: int, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    return f"{status}\n".encode() + b"".join(f"{k}: {v}\n".encode() for k, v in headers) + b"\n" + body


_CHALLENGE = 'Bearer realm="https://auth.fuzz/token",service="registry.fuzz",scope="repository:team/app:pull"'


def registry_pull(tars: Sequence[bytes], flavour: str) -> bytes:
    media = {"layer": LAYER["gz"], "config": OCI_CONFIG, "manifest": OCI_MANIFEST}
    members = _image_members(tars[:1], ["gz"], name=lambda kind, n: media[kind])
    path = "GET /v2/team/app/manifests/1"
    manifest_body = decode(encode(members)).members[2].content
    if flavour == "index":
        members.append((OCI_INDEX, _index([_entry(2, arch="amd64"), _entry(2, arch="arm64")])))
        members.append((path, _answer(200, [("Content-Type", OCI_INDEX)], decode(encode(members)).members[3].content)))
    elif flavour == "token":
        members.append((path, _answer(401, [("WWW-Authenticate", _CHALLENGE)])))
        members.append((path, _answer(200, [("Content-Type", OCI_MANIFEST)], manifest_body)))
        members.append(("GET https://auth.fuzz/token", _answer(200, [], b'{"token":"t0k","expires_in":300}')))
    elif flavour == "basic":
        auth = base64.b64encode(b"user:secret").decode()
        members.append(("@docker-config", json.dumps({"auths": {"registry.fuzz": {"auth": auth}}}).encode()))
        members.append((path, _answer(401, [("WWW-Authenticate", 'Basic realm="registry"')])))
        members.append((path, _answer(200, [("Content-Type", DOCKER_MANIFEST), ("Docker-Content-Digest", "{d:2}")],
                                      manifest_body)))
    elif flavour == "retry":
        members.append((path, _answer(503, [("Retry-After", "0")], b'{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}')))
        members.append((path, _answer(200, [("Content-Type", OCI_MANIFEST)], manifest_body)))
        members.append(("GET /v2/team/app/blobs/{d:0}", _answer(307, [("Location", "https://cdn.fuzz/v2/team/app/blobs/{d:0}")])))
        members.append(("GET /v2/team/app/blobs/{d:1}", _answer(307, [("Location", "https://cdn.fuzz/v2/team/app/blobs/{d:1}")])))
    elif flavour == "missing":
        members.append((path, _answer(404, [], b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}')))
        members.append(("GET /v2/team/app/tags/list", _answer(200, [], b'{"name":"team/app","tags":["2","latest"]}')))
    elif flavour == "pinned":
        members.append(("@ref", b"registry.fuzz/team/app@{d:2}"))
    return encode(members)


# -- the catalogue ---------------------------------------------------------------------------------


def _files_layer_dirs() -> list[bytes]:
    from lamina.newlayer import FILES_LAYER_BLOB, FILES_LAYER_META, write_files_layer_dir

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "main.py")
        with open(src, "wb") as f:
            f.write(b"print('hi')\n")
        out = os.path.join(d, "layer")
        write_files_layer_dir([("/app/main.py", src), ("/app/bin/run", src)], out)
        with open(os.path.join(out, FILES_LAYER_META), "rb") as f:
            meta = f.read()
        with open(os.path.join(out, FILES_LAYER_BLOB), "rb") as f:
            blob = f.read()
    tokens = _json({"mediaType": LAYER["gz"], "digest": "{d:0}", "size": "{s:0}", "diff_id": "{u:0}",
                    "history": [{"created_by": "lamina: files"}]})
    return [encode([(FILES_LAYER_META, meta), (FILES_LAYER_BLOB, blob)]),
            encode([(FILES_LAYER_BLOB + " |gz", tars()[0]), (FILES_LAYER_META, tokens)])]


def tars() -> list[bytes]:
    return layers()


def _as_tar(bundle_bytes: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "a.tar")
        write_tar(decode(bundle_bytes), path)
        with open(path, "rb") as f:
            return f.read()


def _zstd(data: bytes, frames: int = 1) -> bytes:
    import zstandard

    step = max(1, len(data) // frames)
    return b"".join(zstandard.ZstdCompressor(level=1, write_content_size=i % 2 == 0).compress(data[i * step:(i + 1) * step if i < frames - 1 else None])
                    for i in range(frames))


def _layer_index() -> list[bytes]:
    from lamina.analyze.index import dumps
    from lamina.analyze.scan import scan_layer
    from lamina_fuzz.targets import _raw_layer

    indexes = [scan_layer(_raw_layer(t, "none"), "docker-archive:app.tar", (), "linux/amd64") for t in tars()]
    return [dumps(indexes), dumps(indexes[:1])]


_SPECS = [
    {"base": "docker-archive:base.tar", "layers": [{"source": "oci:tools", "layer": "path=/usr/bin/tool", "name": "tools"},
                                                    "oci-archive:x.tar"],
     "files": [{"src": "main.py", "dest": "/app/main.py"}], "file_dirs": [{"src": "static"}],
     "config": {"env": {"A": "1"}, "entrypoint": ["/app"], "cmd": ["x"], "workdir": "/app", "user": "1000",
                "labels": {"k": "v"}, "exposed_ports": ["80/tcp"], "volumes": ["/data"], "stop_signal": "SIGTERM"},
     "tags": ["app:1"], "format": "oci", "allow_platform_mismatch": False, "target": "//app:img"},
    {"platform": "linux/arm64/v8", "layers": [{"source": "b", "layer": 2, "verified": True}], "files_layer": "fl"},
    {"base": {"source": "oci:base", "layer": "0:2", "target": "//b"}, "format": "docker-archive"},
]

_CONFIGS = [
    {"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p").decode()},
               "registry.fuzz": {"username": "u", "password": "p"}, "ghcr.io": {"identitytoken": "id"},
               "r.fuzz:5000": {"registrytoken": "rt"}}},
    {"credHelpers": {"gcr.io": "gcloud"}, "credsStore": "desktop", "auths": {}},
    {"auths": {"x": {"auth": "bm9jb2xvbg=="}}},
]

SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "docker_archive": lambda: [docker_classic(tars()[:2], ["none", "gz"]), docker_classic(tars()[2:], ["zst", "none"], ("a:1", "b")),
                               oci_layout(tars()[:3], ["gz", "none", "zst"], docker_manifest=True)],
    "oci_layout": lambda: [oci_layout(tars()[:2], ["gz", "none"]), oci_layout(tars()[2:], ["zst", "none"], tag=""),
                           oci_multi(tars(), nested=False), oci_multi(tars(), nested=False) + b"\n%%\n@platform\nlinux/arm64", oci_multi(tars(), nested=True), bundle_dir(tars()),
                           symlinked_layout(tars())],
    "oci_archive": lambda: [oci_layout(tars()[:2], ["gz", "none"]), oci_multi(tars(), nested=True) + b"\n%%\n@platform\nlinux/arm64"],
    "archive_bytes": lambda: [_as_tar(docker_classic(tars()[:1], ["none"])), _as_tar(oci_layout(tars()[1:2], ["gz"])),
                              _as_tar(oci_layout(tars()[3:], ["none"], docker_manifest=True))],
    "layer_tar": lambda: tars() + [tars()[0] + b"\0" * 2048] + tar_formats(),
    "layer_gzip": lambda: [gzip.compress(t, mtime=0) for t in tars()] + [gzip.compress(tars()[0][:600]) + gzip.compress(tars()[0][600:]),
                           gzip.compress(tars()[1] + bytes(BOMB), 9, mtime=0)],
    "layer_zstd": lambda: [_zstd(t) for t in tars()] + [_zstd(tars()[1], 3), _zstd(tars()[2] + bytes(BOMB))],
    "elf": lambda: [elf_file(), elf_file(32, ">", interp="", soname="libx.so.1", runpath="/opt/lib:$ORIGIN"),
                    elf_file(needed=("liba.so", "libb.so"), interp="/lib/ld-musl-x86_64.so.1") + b"\0" * 300],
    "www_authenticate": lambda: [s.encode() for s in (
        _CHALLENGE, 'Basic realm="Registry Realm"', 'Bearer realm="https://a/t?x=1", error="insufficient_scope", Basic realm=x',
        'Bearer realm="https://a/t",scope="repository:a:push repository:a:pull repository:b:delete,pull"',
        'Negotiate abc==, Bearer realm=\'q\' service = "s\\"x"')],
    "token_response": lambda: [b'{"token":"abc","expires_in":300}', b'{"access_token":"x","expires_in":1.5,"issued_at":"2024"}',
                               b'{"token":""}', b"[1]"],
    "registry": lambda: [registry_pull(tars(), f) for f in ("index", "token", "basic", "retry", "missing", "pinned")],
    "docker_config": lambda: [json.dumps(c).encode() for c in _CONFIGS] + [b'{"Username":"<token>","Secret":"s","ServerURL":"x"}'],
    "spec": lambda: [json.dumps(s).encode() for s in _SPECS],
    "layer_index": _layer_index,
    "files_layer": _files_layer_dirs,
}


# libFuzzer dictionaries: tokens the mutator splices in, so it need not find them byte by byte.
_JSON = ['{"', '":', '","', '"}', "[", "]", "{}", "[]", "null", "true", "false", "-1", "1e400", "0.5", '"\\ud800"',
         '"\\n"', "[" * 64, "{\"a\":" * 40]
_IMAGE = ['"mediaType"', '"digest"', '"size"', '"layers"', '"config"', '"manifests"', '"platform"', '"annotations"',
          '"rootfs"', '"diff_ids"', '"history"', '"empty_layer"', '"created_by"', '"architecture"', '"os"', '"variant"',
          '"schemaVersion"', '"RepoTags"', '"Layers"', '"Config"', '"imageLayoutVersion"', '"1.0.0"', OCI_MANIFEST,
          OCI_INDEX, OCI_CONFIG, DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json",
          *LAYER.values(), ".nondistributable", REF_NAME, "io.containerd.image.name", "sha256:", "linux", "amd64", "arm64",
          "unknown", "v8", "latest"]
_BUNDLE = ["\n%%\n", "{d:0}", "{d:1}", "{d:2}", "{h:0}", "{h:1}", "{h:2}", "{s:0}", "{s:1}", "{u:0}", "{u:1}", " |gz",
           " |zst", " -> ", "@tag\n", "@platform\n", "@ref\n", "manifest.json", "index.json", "oci-layout", "blobs/sha256/",
           "lamina-selection.json", "../", "/", "./", "layer.tar"]
_TAR = ["ustar\x0000", "ustar  \x00", "././@LongLink", "././@PaxHeader", "path=", "linkpath=", "size=", "uid=",
        "GNU.sparse.", "hdrcharset=", ".wh.", ".wh..wh..opq", "\x1f\x8b\x08", "\x28\xb5\x2f\xfd", "\x7fELF"]
_HTTP = ["GET ", "HEAD ", "/v2/team/app/manifests/", "/v2/team/app/blobs/", "/v2/team/app/tags/list", "200\n", "401\n",
         "404\n", "307\n", "429\n", "503\n", "WWW-Authenticate: ", "Content-Type: ", "Location: ", "Retry-After: ",
         "Docker-Content-Digest: ", "Bearer ", "Basic ", "realm=", "service=", "scope=", "https://auth.fuzz/token",
         '"token"', '"access_token"', '"expires_in"', '"errors"', '"code"', '"tags"', "@docker-config\n", "repository:"]
_AUTH = ['"auths"', '"auth"', '"credHelpers"', '"credsStore"', '"identitytoken"', '"registrytoken"', '"username"',
         '"password"', '"Username"', '"Secret"', "<token>", "dXNlcjpwYXNz"]
_SPEC = ['"base"', '"layers"', '"files"', '"file_dirs"', '"src"', '"dest"', '"source"', '"layer"', '"name"', '"target"',
         '"verified"', '"env"', '"entrypoint"', '"cmd"', '"workdir"', '"user"', '"labels"', '"exposed_ports"', '"volumes"',
         '"stop_signal"', '"tags"', '"format"', '"allow_platform_mismatch"', '"files_layer"', '"scratch"', "docker-archive:",
         "oci:", "oci-archive:", "path=", "created_by=", "linux/amd64"]
_INDEX = ['"format"', '"lamina.layer-index/1"', '"entries"', '"path"', '"kind"', '"mode"', '"uid"', '"gid"', '"sha256"',
          '"linkname"', '"elf"', '"bits"', '"endian"', '"machine"', '"needed"', '"soname"', '"runpath"', '"rpath"',
          '"complete"', '"below"', '"below_diff_ids"', '"texts"', '"on_top"', '"index"', '"diff_id"', '"media_type"', "file",
          "dir", "symlink", "hardlink", "other"]
_ARCHIVE = _JSON + _IMAGE + _BUNDLE + _TAR
DICTIONARIES: dict[str, list[str]] = {
    "docker_archive": _ARCHIVE, "oci_layout": _ARCHIVE, "oci_archive": _ARCHIVE, "archive_bytes": _JSON + _IMAGE + _TAR,
    "layer_tar": _TAR, "layer_gzip": _TAR, "layer_zstd": _TAR, "elf": ["\x7fELF", "\x02\x01\x01", "\x01\x02\x01"],
    "www_authenticate": _HTTP, "token_response": _JSON + _HTTP, "registry": _JSON + _IMAGE + _BUNDLE + _HTTP + _AUTH,
    "docker_config": _JSON + _AUTH, "spec": _JSON + _SPEC, "layer_index": _JSON + _INDEX,
    "files_layer": _JSON + _BUNDLE + _TAR + ['"diff_id"', '"history"', "files-layer.json", "files-layer.tar.gz"],
}


def write_dictionary(target: str, path: str) -> None:
    """The target's tokens in libFuzzer's dictionary format (one quoted, escaped token a line)."""
    with open(path, "w") as f:
        for token in DICTIONARIES[target]:
            escaped = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "\\x%02x" % ord(c) for c in token)
            f.write(f'"{escaped}"\n')


DEEP = b"[" * 5000 + b"]" * 5000  # JSON nested deeper than Python's recursion limit
_JSON_TARGETS = {"token_response", "docker_config", "spec", "layer_index"}


def _deep_documents() -> dict[str, list[bytes]]:
    """For the readers of JSON inside archives, layouts and registries: DEEP in each document's place."""
    manifest_path = "GET /v2/team/app/manifests/1"
    return {
        "docker_archive": [encode([("manifest.json", DEEP)])],
        "oci_archive": [encode([_LAYOUT, ("index.json", DEEP)])],
        "oci_layout": [encode([_LAYOUT, ("index.json", DEEP)]), encode([("oci-layout", DEEP)]),
                       encode([_LAYOUT, ("index.json", b"{}"), ("lamina-selection.json", DEEP)])],
        "registry": [encode([(manifest_path, _answer(200, [("Content-Type", OCI_MANIFEST)], DEEP))]),
                     encode([(manifest_path, _answer(404, [], DEEP)), ("GET /v2/team/app/tags/list", _answer(200, [], DEEP))]),
                     encode([(manifest_path, _answer(401, [("WWW-Authenticate", _CHALLENGE)])),
                             ("GET https://auth.fuzz/token", _answer(200, [], DEEP))]),
                     encode([("@docker-config", DEEP)])],
        "files_layer": [encode([("files-layer.json", DEEP), ("files-layer.tar.gz |gz", b"")])],
    }


def write_seeds(target: str, directory: str) -> int:
    """The target's seeds as files in `directory` (libFuzzer's corpus form); how many."""
    os.makedirs(directory, exist_ok=True)
    seeds = seeds_of(target)
    for i, data in enumerate(seeds):
        with open(os.path.join(directory, f"seed-{i:02d}"), "wb") as f:
            f.write(data)
    return len(seeds)


def seeds_of(target: str) -> list[bytes]:
    """The target's seeds; those of a JSON reader include JSON nested too deeply to parse recursively."""
    deep = [DEEP, b'{"a":' * 3000 + b"1" + b"}" * 3000] if target in _JSON_TARGETS else []
    return SEEDS[target]() + deep + _deep_documents().get(target, [])


