#!/usr/bin/env python3
"""A KMS in its own process that counts the calls made to it, for the dataset benchmark
(bench_dataset.py) and anyone who wants to see how many KMS calls a job makes.

The server (``python benchmarks/kms_server.py --master-keys kf,kc1,kc2``) holds random
master keys in memory and wraps keys as parquet-java's InMemoryKMS does: AES-GCM under
the master key, AAD = the UTF-8 master key id, ``base64(nonce ‖ ciphertext ‖ tag)``
(with ``cryptography``; pqseal is not imported). It listens on 127.0.0.1, a free port,
and prints ``port N`` once it is ready. HTTP, JSON bodies:

- ``POST /wrap``   ``{"master_key_id": id, "key": base64}``   → ``{"wrapped": text}``
- ``POST /unwrap`` ``{"master_key_id": id, "wrapped": text}`` → ``{"key": base64}``
- ``GET /stats``   → ``{"clients": {client: {"wrap": n, "unwrap": n}}}``
- ``POST /reset``  → the counts start again from zero.

A client names itself in the ``X-Kms-Client`` header (role and process id, e.g.
``pyarrow pid=1234``); an unknown master key is a 404. The counts are what a job costs
the KMS, per client process.

Clients of the server, each calling it over HTTP from wherever it runs:

- :class:`HttpKms` (a pqseal ``KmsClient``) and :class:`HttpKmsFactory` (picklable,
  builds the client where it is called, as a factory reaching a real KMS would);
- :func:`pyarrow_client` (a ``pyarrow.parquet.encryption.KmsClient`` for ``pe.CryptoFactory``);
- ``java/HttpKmsClient.java`` (parquet-java's ``KmsClient``, for Spark).

All of them take the server's address from the KMS connection configuration's instance
URL (``kms_instance_url``, parquet-java's ``parquet.encryption.kms.instance.url``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENT_HEADER = "X-Kms-Client"
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- the server process

class _Counts:
    def __init__(self):
        self._lock = threading.Lock()
        self._by_client: dict[str, dict[str, int]] = defaultdict(lambda: {"wrap": 0, "unwrap": 0})

    def add(self, client: str, op: str) -> None:
        with self._lock:
            self._by_client[client][op] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {c: dict(v) for c, v in self._by_client.items()}

    def reset(self) -> None:
        with self._lock:
            self._by_client.clear()


def _handler(master: dict[str, bytes], counts: _Counts) -> type:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def wrap(key: bytes, mk: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + AESGCM(master[mk]).encrypt(nonce, key, mk.encode())).decode()

    def unwrap(wrapped: str, mk: str) -> bytes:
        raw = base64.b64decode(wrapped, validate=True)
        return AESGCM(master[mk]).decrypt(raw[:12], raw[12:], mk.encode())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"      # keep-alive: a client reuses its connection

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/stats":
                self._reply(200, {"clients": counts.snapshot()})
            else:
                self._reply(404, {"error": "no such endpoint"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/reset":
                counts.reset()
                return self._reply(200, {})
            if self.path not in ("/wrap", "/unwrap"):
                return self._reply(404, {"error": "no such endpoint"})
            op = self.path[1:]
            try:
                req = json.loads(body)
                mk = req["master_key_id"]
            except (ValueError, KeyError, TypeError):
                return self._reply(400, {"error": "expected JSON with master_key_id"})
            counts.add(self.headers.get(CLIENT_HEADER, "anonymous"), op)
            if mk not in master:
                return self._reply(404, {"error": f"unknown master key {mk!r}"})
            try:
                if op == "wrap":
                    return self._reply(200, {"wrapped": wrap(base64.b64decode(req["key"], validate=True), mk)})
                return self._reply(200, {"key": base64.b64encode(unwrap(req["wrapped"], mk)).decode()})
            except InvalidTag:
                return self._reply(403, {"error": "wrapped key does not open under this master key"})
            except (ValueError, KeyError, TypeError):
                return self._reply(400, {"error": "malformed request"})

        def log_message(self, format, *args):   # quiet; nothing secret would be logged anyway
            pass

    return Handler


def serve(master_key_ids: list[str], key_bits: int = 128) -> None:
    master = {k: os.urandom(key_bits // 8) for k in master_key_ids}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(master, _Counts()))
    httpd.daemon_threads = True
    print(f"port {httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------- client side

def _call(url: str, path: str, body: dict | None, client: str) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data,
                                 headers={CLIENT_HEADER: client, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = json.loads(e.read() or b"{}").get("error", e.reason)
        raise KmsError(e.code, f"KMS {path}: {detail}") from None


class KmsError(Exception):
    """The KMS refused a call (``status``: the HTTP status; 404 = unknown master key)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def client_name(role: str) -> str:
    return f"{role} pid={os.getpid()}"


class KmsServer:
    """The server in a child process: ``with KmsServer(["kf", "kc1"]) as kms: kms.url``."""

    def __init__(self, master_key_ids, key_bits: int = 128):
        self._proc = subprocess.Popen([sys.executable, os.path.join(HERE, "kms_server.py"),
                                       "--master-keys", ",".join(master_key_ids), "--key-bits", str(key_bits)],
                                      stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline()
        if not line.startswith("port "):
            self._proc.kill()
            raise RuntimeError(f"KMS server did not start (said {line!r})")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stats(self) -> dict[str, dict[str, int]]:
        """{client: {"wrap": n, "unwrap": n}} since the last reset."""
        return _call(self.url, "/stats", None, "stats")["clients"]

    def reset(self) -> None:
        _call(self.url, "/reset", {}, "stats")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _url_of(kms_connection_config, default: str | None) -> str:
    url = getattr(kms_connection_config, "kms_instance_url", None)
    return url if url and url != "DEFAULT" else default


try:
    from pqseal.kms import KmsClient as _PqsealKmsClient
except ImportError:         # the server itself needs no pqseal
    _PqsealKmsClient = object


class HttpKms(_PqsealKmsClient):
    """pqseal's ``KmsClient`` over the server. Holds an address and a name, no key: it
    pickles, and each process that uses it reports under its own process id."""

    def __init__(self, url: str, role: str = "pqseal"):
        self.url, self.role = url, role

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return self._call("/wrap", {"master_key_id": master_key_identifier,
                                    "key": base64.b64encode(bytes(key_bytes)).decode()})["wrapped"]

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return base64.b64decode(self._call("/unwrap", {"master_key_id": master_key_identifier,
                                                       "wrapped": wrapped_key})["key"])

    def _call(self, path: str, body: dict) -> dict:
        from pqseal.errors import KeyNotFound

        try:
            return _call(self.url, path, body, client_name(self.role))
        except KmsError as e:
            if e.status == 404:
                raise KeyNotFound(str(e)) from None
            raise

    def __repr__(self) -> str:
        return f"HttpKms({self.url!r}, role={self.role!r})"


class HttpKmsFactory:
    """``factory(KmsConnectionConfig) -> HttpKms``: picklable; the client is built where
    the factory is called. The config's ``kms_instance_url`` wins over ``url``."""

    def __init__(self, url: str | None = None, role: str = "pqseal"):
        self.url, self.role = url, role

    def __call__(self, kms_connection_config=None) -> HttpKms:
        return HttpKms(_url_of(kms_connection_config, self.url), self.role)


def pyarrow_client(role: str = "pyarrow"):
    """A ``kms_client_factory`` for ``pyarrow.parquet.encryption.CryptoFactory``: the server
    is ``KmsConnectionConfig(kms_instance_url=...)``."""
    import pyarrow.parquet.encryption as pe

    class PyarrowHttpKms(pe.KmsClient):
        def __init__(self, cfg):
            super().__init__()
            self.url = _url_of(cfg, None)

        def wrap_key(self, key_bytes, master_key_identifier):
            return _call(self.url, "/wrap", {"master_key_id": master_key_identifier,
                                             "key": base64.b64encode(bytes(key_bytes)).decode()},
                         client_name(role))["wrapped"]

        def unwrap_key(self, wrapped_key, master_key_identifier):
            return base64.b64decode(_call(self.url, "/unwrap", {"master_key_id": master_key_identifier,
                                                                "wrapped": wrapped_key}, client_name(role))["key"])

    return PyarrowHttpKms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="A counting KMS on 127.0.0.1 (prints 'port N' when ready)")
    ap.add_argument("--master-keys", default="kf,kc1,kc2", help="comma-separated master key ids")
    ap.add_argument("--key-bits", type=int, default=128, choices=(128, 192, 256))
    a = ap.parse_args(argv)
    serve([k for k in a.master_keys.split(",") if k], a.key_bits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
