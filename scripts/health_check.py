#!/usr/bin/env python3
"""Check an inference endpoint (vLLM or the gateway before it) at increasing depth.

Standard library only, so it runs on any host with Python 3 and nothing installed.

depths (each includes the ones before it):
  live    GET /health -> 200 (and GET /ready -> 200 with --ready)
  auth    GET /v1/models with the key -> 200 and lists a model;
          without a key and with a wrong key -> 401
  chat    a real chat completion of a few tokens -> a choice and usage
  vision  a chat completion with a small image (generated, or --image FILE)

The base URL may be given with or without /v1 (http://h:8000 or http://h:8000/v1):
the health routes are at its root, the API under /v1. The key is never printed.
"""

import argparse
import base64
import http.client
import json
import mimetypes
import os
import secrets
import ssl
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

DEPTHS = ("live", "auth", "chat", "vision")
EPILOG = """\
environment:
  OPENAI_BASE_URL  default for --base-url (else http://127.0.0.1:8000)
  OPENAI_API_KEY   default for --api-key
exit codes:
  0  every check passed
  1  a check failed: the server answered, but wrongly (unhealthy, bad auth, ...)
  2  usage error
  3  the server is unreachable, or a request timed out
"""


@dataclass
class Check:
    name: str
    ok: bool
    status: int | None
    latency_ms: float | None
    detail: str


class Unreachable(Exception):
    """No HTTP answer at all: refused, DNS, TLS, reset or timed out."""


def tiny_png(size: int = 64) -> bytes:
    """Return a size x size RGB gradient as PNG bytes, built with zlib and struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\0" + bytes(v for x in range(size) for v in (x * 4 % 256, y * 4 % 256, 160)) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def error_text(payload: object) -> str:
    """The message of an OpenAI-style error body, or the start of the body."""
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict) and (inner.get("message") or inner.get("detail")):
            return str(inner.get("message") or inner.get("detail"))
        if isinstance(inner, str):
            return inner
    return str(payload)[:200]


class Prober:
    """Runs checks against one endpoint and collects their results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model: str | None = args.model
        self.results: list[Check] = []
        self.tls = None
        if args.insecure:  # e.g. a gateway with a self-signed certificate
            self.tls = ssl.create_default_context()
            self.tls.check_hostname, self.tls.verify_mode = False, ssl.CERT_NONE

    def request(self, method: str, url: str, key: str | None, body: object) -> tuple[int, Any, float]:
        """Return (status, parsed body, latency in ms); raise Unreachable."""
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        start = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=self.args.timeout, context=self.tls) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError):
                reason = f"timed out after {self.args.timeout:g}s"
            elif isinstance(e, http.client.HTTPException):
                reason = f"not an HTTP answer: {type(e).__name__} {' '.join(str(e).split())}"
            raise Unreachable(f"{method} {url}: {reason}") from None
        latency = round((time.monotonic() - start) * 1000, 1)
        try:
            return status, json.loads(raw), latency
        except ValueError:
            return status, raw.decode(errors="replace").strip(), latency

    def check(
        self,
        name: str,
        method: str,
        url: str,
        expect: int,
        key: str | None = None,
        body: object = None,
        judge: Callable[[Any], str] | None = None,
    ) -> None:
        """Make one request and record it. `judge(payload)` returns the detail
        of a good answer, or raises ValueError/KeyError/... for a bad one."""
        try:
            status, payload, latency = self.request(method, url, key, body)
        except Unreachable as e:
            self.record(Check(name, False, None, None, str(e)))
            raise
        ok, detail = status == expect, f"{method} {url} -> {status}"
        if not ok and status < 300 and expect == 401:
            detail += ", expected 401: the API does not enforce the key"
        elif not ok and status == 401 and key:
            detail += ", expected 200: the server rejected the key from --api-key/OPENAI_API_KEY"
        elif not ok:
            detail += f", expected {expect}: {error_text(payload)}"
        elif judge:
            try:
                detail = judge(payload)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                ok, detail = False, f"bad answer: {type(e).__name__}: {e}"
        self.record(Check(name, ok, status, latency, detail))

    def record(self, check: Check) -> None:
        if self.args.api_key and len(self.args.api_key) >= 8:  # never show the key, even if echoed
            check.detail = check.detail.replace(self.args.api_key, "<key>")
        self.results.append(check)
        if not self.args.json:
            mark = "ok  " if check.ok else "FAIL"
            status = check.status or "-"
            ms = f"{check.latency_ms:.0f}ms" if check.latency_ms is not None else "-"
            print(f"{mark} {check.name:<16} {status:>3} {ms:>7}  {check.detail}")

    # judges -----------------------------------------------------------------

    def pick_model(self, payload: dict) -> str:
        ids = [m["id"] for m in payload["data"]]
        if not ids:
            raise ValueError("the server serves no model")
        if self.model and self.model not in ids:
            raise ValueError(f"model {self.model!r} not served; served: {ids}")
        self.model = self.model or ids[0]
        return f"serves {', '.join(ids)}; using {self.model}"

    @staticmethod
    def completion(payload: dict) -> str:
        if not payload["choices"]:
            raise ValueError("no choices in the answer")
        text = payload["choices"][0]["message"]["content"]
        usage = payload["usage"]
        if not usage or not usage.get("completion_tokens"):
            raise ValueError(f"no usage in the answer: {usage}")
        return (
            f"{payload.get('model')}: {usage['prompt_tokens']} prompt +"
            f" {usage['completion_tokens']} new tokens, reply {text!r}"
        )

    # depths -----------------------------------------------------------------

    def live(self, root: str) -> None:
        self.check("health", "GET", f"{root}/health", 200)
        if self.args.ready:
            self.check("ready", "GET", f"{root}/ready", 200)

    def auth(self, api: str) -> None:
        key = self.args.api_key
        wrong = "wrong-" + secrets.token_hex(16)
        url = f"{api}/models"
        self.check("models", "GET", url, 200, key=key, judge=self.pick_model)
        self.check("models-no-key", "GET", url, 401)
        self.check("models-wrong-key", "GET", url, 401, key=wrong)

    def chat(self, api: str, name: str = "chat", image: str | None = None) -> None:
        content: object = "Reply with the single word OK."
        if image:
            content = [
                {"type": "text", "text": "What colour is this image? One word."},
                {"type": "image_url", "image_url": {"url": image}},
            ]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 3,
            "temperature": 0,
        }
        url = f"{api}/chat/completions"
        self.check(name, "POST", url, 200, self.args.api_key, body, self.completion)


def split_base_url(url: str) -> tuple[str, str]:
    """Return (root, api): 'http://h:8000/v1' and 'http://h:8000' both give
    ('http://h:8000', 'http://h:8000/v1')."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    root = url.removesuffix("/v1")
    return root, root + "/v1"


def image_data_url(path: str | None) -> str:
    """A data URL for the image file at `path`, or for a generated tiny PNG."""
    if path is None:
        data, mime = tiny_png(), "image/png"
    else:
        with open(path, "rb") as f:
            data = f.read()
        mime = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000",
        help="host:port or base URL, with or without /v1",
    )
    p.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY; never printed"
    )
    p.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="read the key from FILE ('-' for standard input), so it is in no process's arguments or environment",
    )
    p.add_argument("--depth", choices=DEPTHS, default="live", help="default: live")
    p.add_argument("--ready", action="store_true", help="also check GET /ready")
    p.add_argument("--model", help="default: the first model at /v1/models")
    p.add_argument("--image", help="image file for --depth vision")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--insecure", action="store_true", help="skip TLS verification")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.api_key_file:
        try:
            with open(0 if args.api_key_file == "-" else args.api_key_file) as source:
                args.api_key = source.readline().strip()
        except OSError as e:
            p.error(f"--api-key-file {args.api_key_file}: {e.strerror}")

    depth = DEPTHS.index(args.depth)
    if depth >= DEPTHS.index("auth") and not args.api_key:
        p.error(f"--depth {args.depth} needs a key: --api-key, --api-key-file or OPENAI_API_KEY")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    try:
        image = image_data_url(args.image) if args.depth == "vision" else None
    except OSError as e:
        p.error(f"--image {args.image}: {e.strerror}")
    root, api = split_base_url(args.base_url)

    prober = Prober(args)
    levels = [
        lambda: prober.live(root),
        lambda: prober.auth(api),
        lambda: prober.chat(api),
        lambda: prober.chat(api, "vision", image),
    ]
    code = 0
    try:
        for level in levels[: depth + 1]:
            level()
            if not all(c.ok for c in prober.results):
                code = 1
                break  # deeper checks would only repeat the failure
    except Unreachable:
        code = 3

    if args.json:
        checks = [asdict(c) for c in prober.results]
        summary = {"base_url": root, "depth": args.depth, "ok": code == 0}
        print(json.dumps({**summary, "exit_code": code, "checks": checks}))
    else:
        verdict = {0: "healthy", 1: "UNHEALTHY", 3: "UNREACHABLE or TIMED OUT"}[code]
        print(f"{verdict}: {root}, depth {args.depth}")
    return code


if __name__ == "__main__":
    sys.exit(main())
