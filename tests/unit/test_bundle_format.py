"""read_bundle: what the grid runs on upload refuses every malformed archive."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest

from grid_local import bundle_format
from grid_local.bundle_format import Bundle, digest_of, read_bundle, write_bundle
from grid_local.errors import BundleError

FILES = {"main.flow": 'load("//lib/a.star", "a")\nprint(a)\n', "lib/a.star": "a = 1\n"}


def manifest_for(files: dict[str, str], entry: str = "main.flow", **extra: Any) -> dict[str, Any]:
    return {
        "format": 1, "entry": entry, "prelude": "v1", "settings": {},
        "files": {p: "sha256:" + hashlib.sha256(t.encode()).hexdigest() for p, t in files.items()},
        **extra,
    }


def archive(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def good_members(files: dict[str, str] = FILES, **extra: Any) -> list[tuple[str, bytes]]:
    members = [("manifest.json", json.dumps(manifest_for(files, **extra)).encode())]
    return members + [("files/" + p, t.encode()) for p, t in files.items()]


def test_round_trip() -> None:
    data, digest = write_bundle("main.flow", FILES, {"project": {"name": "x"}})
    bundle = read_bundle(data, digest)
    assert isinstance(bundle, Bundle)
    assert bundle.files == FILES and bundle.entry == "main.flow" and bundle.digest == digest
    assert bundle.settings == {"project": {"name": "x"}}
    assert digest == digest_of(data) and digest.startswith("sha256:")


def test_write_is_deterministic_whatever_the_dict_order() -> None:
    reordered = dict(reversed(list(FILES.items())))
    assert write_bundle("main.flow", FILES, {"b": 1, "a": 2}) == write_bundle("main.flow", reordered, {"a": 2, "b": 1})


def test_a_hand_made_archive_with_the_same_content_is_accepted() -> None:
    assert read_bundle(archive(good_members())).files == FILES


def test_digest_mismatch() -> None:
    data, digest = write_bundle("main.flow", FILES, {})
    other = "sha256:" + "0" * 64
    with pytest.raises(BundleError, match="digest mismatch"):
        read_bundle(data, other)
    with pytest.raises(BundleError, match="malformed digest"):
        read_bundle(data, "md5:abc")
    tampered = data.replace(b"a = 1", b"a = 2")
    with pytest.raises(BundleError, match="digest mismatch"):
        read_bundle(tampered, digest)


@pytest.mark.parametrize("garbage", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40, bytes(range(256)) * 4])
def test_garbage_bytes(garbage: bytes) -> None:
    with pytest.raises(BundleError, match="not a valid bundle archive"):
        read_bundle(garbage)


def test_truncated_archive() -> None:
    data, _ = write_bundle("main.flow", FILES, {})
    with pytest.raises(BundleError):
        read_bundle(data[: len(data) // 2])


@pytest.mark.parametrize("name", [
    "files/../evil.star", "files/../../etc/cron.d/x", "files/lib/../../x.star", "../x.star",
])
def test_zip_slip_members(name: str) -> None:
    with pytest.raises(BundleError, match="unsafe path|unexpected member"):
        read_bundle(archive([*good_members(), (name, b"x = 1\n")]))


@pytest.mark.parametrize("name", ["files//etc/passwd", "/files/x.star", "files/C:/x.star", "files/a\\b.star"])
def test_absolute_and_odd_paths(name: str) -> None:
    with pytest.raises(BundleError, match="unsafe path|unexpected member"):
        read_bundle(archive([*good_members(), (name, b"x = 1\n")]))


def test_unexpected_members_outside_files() -> None:
    with pytest.raises(BundleError, match="unexpected member 'extra.txt'"):
        read_bundle(archive([*good_members(), ("extra.txt", b"hi")]))


def test_duplicate_names() -> None:
    members = good_members()
    with pytest.warns(UserWarning):  # zipfile itself warns about writing a duplicate
        data = archive([*members, ("files/lib/a.star", b"a = 2\n")])
    with pytest.raises(BundleError, match="duplicate member name in bundle: 'files/lib/a.star'"):
        read_bundle(data)


def test_oversized_members() -> None:
    big = {"main.flow": "x = 1\n" * 1000}
    data = archive(good_members(big))
    with pytest.raises(BundleError, match=r"member 'files/main.flow' is 6000 bytes, over the limit of 1000"):
        read_bundle(data, max_file_bytes=1000)
    assert read_bundle(data, max_file_bytes=6000).files == big


def test_a_member_lying_about_its_size_is_refused() -> None:
    big = {"main.flow": "x = 1\n" * 1000}
    data = bytearray(archive(good_members(big), compression=zipfile.ZIP_DEFLATED))
    # The central directory entry of files/main.flow: its uncompressed size is at offset 24.
    header = data.find(b"files/main.flow", data.find(b"PK\x01\x02")) - 46
    assert data[header:header + 4] == b"PK\x01\x02"
    data[header + 24:header + 28] = (10).to_bytes(4, "little")
    with pytest.raises(BundleError):
        read_bundle(bytes(data), max_file_bytes=1000)


def test_oversized_bundle() -> None:
    data, _ = write_bundle("main.flow", FILES, {})
    with pytest.raises(BundleError, match="over the limit of 100"):
        read_bundle(data, max_bytes=100)


def test_manifest_problems() -> None:
    files_only = [("files/" + p, t.encode()) for p, t in FILES.items()]
    with pytest.raises(BundleError, match="no manifest.json"):
        read_bundle(archive(files_only))
    with pytest.raises(BundleError, match="not JSON"):
        read_bundle(archive([("manifest.json", b"{nope"), *files_only]))
    with pytest.raises(BundleError, match="not a JSON object"):
        read_bundle(archive([("manifest.json", b"[]"), *files_only]))
    with pytest.raises(BundleError, match="unsupported bundle format 99"):
        read_bundle(archive(good_members(format=99)))
    with pytest.raises(BundleError, match="entry script 'gone.flow' is not in the bundle"):
        read_bundle(archive(good_members(entry="gone.flow")))
    listed_more = [("manifest.json", json.dumps(manifest_for({**FILES, "x.star": ""})).encode()), *files_only]
    with pytest.raises(BundleError, match="does not list exactly the files"):
        read_bundle(archive(listed_more))
    wrong_hash = [("manifest.json", json.dumps(manifest_for(FILES)).encode()),
                  ("files/main.flow", b"changed\n"), ("files/lib/a.star", b"a = 1\n")]
    with pytest.raises(BundleError, match="'main.flow' does not match its sha256"):
        read_bundle(archive(wrong_hash))


def test_non_utf8_member() -> None:
    files = {"main.flow": "x = 1\n"}
    members = [("manifest.json", json.dumps({**manifest_for(files), "files": {
        "main.flow": "sha256:" + hashlib.sha256(b"\xff\xfe").hexdigest()}}).encode()), ("files/main.flow", b"\xff\xfe")]
    with pytest.raises(BundleError, match="not UTF-8"):
        read_bundle(archive(members))


def test_too_many_members(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_format, "MAX_MEMBERS", 2)
    with pytest.raises(BundleError, match="3 members, over the limit of 2"):
        read_bundle(archive(good_members()))


def test_write_refuses_what_read_would_refuse() -> None:
    with pytest.raises(BundleError, match="unsafe path"):
        write_bundle("main.flow", {"main.flow": "", "../x.star": ""}, {})
    with pytest.raises(BundleError, match="not among the bundled files"):
        write_bundle("gone.flow", FILES, {})
    with pytest.raises(BundleError, match="not plain JSON"):
        write_bundle("main.flow", FILES, {"x": float("nan")})
