"""The bundle archive: a deterministic zip of a manifest and the project files a flow loads.

A bundle's digest is ``sha256:`` of the archive bytes. Archives are written with fixed
timestamps, permissions and order, stored uncompressed, so the same sources give the same bytes
on any machine. ``read_bundle`` is what the grid runs on upload: it refuses anything malformed
(zip-slip or absolute member names, duplicates, oversized or encrypted members, a manifest that
does not match the files, a digest mismatch) before a byte is written anywhere.

Layout::

    manifest.json      {"format": 1, "entry": "main.flow", "prelude": "v1",
                        "settings": {...flowmetal.toml...}, "files": {"main.flow": "sha256:..."}}
    files/<path>       each project file, UTF-8, by project-relative POSIX path
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from grid_local.errors import BundleError

PROJECT_FILE = "flowmetal.toml"
"""A project's settings file; its contents travel in the bundle's manifest as ``settings``."""

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES_DIR = "files/"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MEMBERS = 10_000
_EPOCH = (1980, 1, 1, 0, 0, 0)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    digest: str
    manifest: dict[str, Any]
    files: dict[str, str]

    @property
    def entry(self) -> str:
        return str(self.manifest["entry"])

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest.get("settings") or {})


def check_path(path: str) -> str:
    """A project-relative POSIX path that stays inside the project, or BundleError."""
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or re.match(r"^[A-Za-z]:", path)
        or posixpath.normpath(path) != path
        or path == ".."
        or path.startswith("../")
    ):
        raise BundleError(f"unsafe path in bundle: '{path}'")
    return path


def write_bundle(entry: str, files: dict[str, str], settings: dict[str, Any], prelude: str = "v1") -> tuple[bytes, str]:
    """Archive ``files`` (project-relative path -> text); returns the bytes and their digest."""
    for path in files:
        check_path(path)
    if entry not in files:
        raise BundleError(f"entry script '{entry}' is not among the bundled files")
    encoded = {path: text.encode("utf-8") for path, text in files.items()}
    manifest = {
        "format": FORMAT_VERSION,
        "entry": entry,
        "prelude": prelude,
        "settings": settings,
        "files": {path: "sha256:" + hashlib.sha256(data).hexdigest() for path, data in sorted(encoded.items())},
    }
    try:
        manifest_bytes = json.dumps(manifest, sort_keys=True, indent=2, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise BundleError(f"bundle settings are not plain JSON data: {exc}") from None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        members = [(MANIFEST, manifest_bytes)]
        members += [(FILES_DIR + path, data) for path, data in sorted(encoded.items())]
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, data)
    data = buffer.getvalue()
    return data, digest_of(data)


def _safe_member(name: str) -> str:
    if not name.startswith(FILES_DIR):
        raise BundleError(f"unexpected member '{name}' (files live under {FILES_DIR})")
    path = name[len(FILES_DIR):]
    try:
        return check_path(path)
    except BundleError:
        raise BundleError(f"unsafe path in bundle: '{name}'") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Read at most ``limit`` bytes, whatever the header claims (a lying header can't inflate past it)."""
    if info.file_size > limit:
        raise BundleError(f"member '{info.filename}' is {info.file_size} bytes, over the limit of {limit}")
    with archive.open(info) as stream:
        raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise BundleError(f"member '{info.filename}' is over the limit of {limit} bytes")
    return raw


def read_bundle(
    data: bytes,
    expected_digest: str | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Bundle:
    """Open and validate an archive; raise BundleError for any malformed or mismatched bundle."""
    if not isinstance(data, (bytes, bytearray)):
        raise BundleError("a bundle is bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise BundleError(f"bundle is {len(data)} bytes, over the limit of {max_bytes}")
    digest = digest_of(data)
    if expected_digest is not None:
        if not _DIGEST.match(expected_digest):
            raise BundleError(f"malformed digest '{expected_digest}' (expected sha256:<64 hex digits>)")
        if expected_digest != digest:
            raise BundleError(f"digest mismatch: expected {expected_digest}, the archive is {digest}")
    try:
        return _read_archive(data, digest, max_file_bytes)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
            NotImplementedError, RuntimeError, OSError) as exc:
        raise BundleError(f"not a valid bundle archive: {exc}") from None


def _read_archive(data: bytes, digest: str, max_file_bytes: int) -> Bundle:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"bundle has {len(infos)} members, over the limit of {MAX_MEMBERS}")
        names = [info.filename for info in infos]
        if len(names) != len(set(names)):
            duplicate = sorted(name for name in set(names) if names.count(name) > 1)[0]
            raise BundleError(f"duplicate member name in bundle: '{duplicate}'")
        if MANIFEST not in names:
            raise BundleError(f"bundle has no {MANIFEST}")
        files: dict[str, str] = {}
        manifest: Any = None
        for info in infos:
            if info.flag_bits & 0x1:
                raise BundleError(f"member '{info.filename}' is encrypted")
            if info.filename == MANIFEST:
                raw = _read_member(archive, info, MAX_MANIFEST_BYTES)
                try:
                    manifest = json.loads(raw)
                except ValueError as exc:
                    raise BundleError(f"{MANIFEST} is not JSON: {exc}") from None
                continue
            path = _safe_member(info.filename)
            raw = _read_member(archive, info, max_file_bytes)
            try:
                files[path] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BundleError(f"'{path}' is not UTF-8 text") from None
    _check_manifest(manifest, files)
    return Bundle(digest, manifest, files)


def _check_manifest(manifest: Any, files: dict[str, str]) -> None:
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} is not a JSON object")
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(f"unsupported bundle format {manifest.get('format')!r} (this grid reads {FORMAT_VERSION})")
    if not isinstance(manifest.get("settings", {}), dict):
        raise BundleError(f"{MANIFEST}: settings must be an object")
    if not isinstance(manifest.get("prelude", ""), str):
        raise BundleError(f"{MANIFEST}: prelude must be a string")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or set(listed) != set(files):
        raise BundleError("manifest does not list exactly the files in the bundle")
    for path, text in files.items():
        if listed[path] != "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest():
            raise BundleError(f"'{path}' does not match its sha256 in the manifest")
    entry = manifest.get("entry")
    if not isinstance(entry, str) or entry not in files:
        raise BundleError(f"entry script '{entry}' is not in the bundle")
