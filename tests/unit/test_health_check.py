"""scripts/health_check.py's helpers: base URLs, error bodies, the generated image."""

from __future__ import annotations

import base64
import zlib

import pytest
from kitcode import load

health_check = load("scripts/health_check.py")


@pytest.mark.parametrize(
    "url", ["http://h:8000/v1", "http://h:8000", "http://h:8000/v1/", " h:8000 "], ids=["api", "root", "slash", "bare"]
)
def test_base_urls(url):
    assert health_check.split_base_url(url) == ("http://h:8000", "http://h:8000/v1")


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"error": {"message": "Invalid API key", "code": "invalid_api_key"}}, "Invalid API key"),
        ({"detail": "Not Found"}, "Not Found"),
        ({"error": "rate limited"}, "rate limited"),
        ("x" * 500, "x" * 200),
    ],
)
def test_error_text(payload, text):
    assert health_check.error_text(payload) == text


def test_the_generated_image_is_a_valid_png():
    png = health_check.tiny_png(8)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    idat = png.index(b"IDAT")
    length = int.from_bytes(png[idat - 4 : idat], "big")
    assert len(zlib.decompress(png[idat + 4 : idat + 4 + length])) == 8 * (1 + 8 * 3)  # filter byte + RGB per row
    url = health_check.image_data_url(None)
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")
