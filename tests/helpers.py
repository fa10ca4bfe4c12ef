"""Helpers shared by the test suites (fixtures stay in the conftest files)."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def write_file(root: Path, path: str, source: str) -> Path:
    """Write ``root/path`` (folders made as needed); ``source`` is dedented, so tests can indent scripts.

    The file is replaced in one rename, as editors save: a watcher never sees it empty or half
    written, however slowly this process runs between truncating and writing.
    """
    full = root / path
    full.parent.mkdir(parents=True, exist_ok=True)
    partial = full.with_name(f".{full.name}.{os.getpid()}.tmp")
    partial.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    os.replace(partial, full)
    return full


class QuietJsonHandler(BaseHTTPRequestHandler):
    """A test server's handler: JSON answers, no access log on stderr."""

    def send_json(self, status: int, value: Any) -> None:
        payload = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


class LoopbackServer:
    """A threaded HTTP server on an ephemeral port of a loopback address (127.0.0.1 unless told: any
    127.x.y.z works on Linux), serving until close()."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
