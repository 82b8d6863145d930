#!/usr/bin/env python3
"""Ask a vision model about an image (local file or http(s) URL) and print the reply.

Examples:
  python vision.py --image cat.jpg "What animal is this?"
  python vision.py --image https://example.com/cat.png

A local file is sent inline as a base64 data URL; a URL is passed on as it is,
for the server to fetch.
"""

import base64
import mimetypes
import time
from pathlib import Path

import _common as common

# Magic bytes, for files whose name does not tell the type.
SIGNATURES = {
    b"\x89PNG": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


def image_url(image: str) -> str:
    """Return an http(s) URL as it is, or a local file as a base64 data URL."""
    if image.startswith(("http://", "https://")):
        return image
    data = Path(image).read_bytes()
    mime = mimetypes.guess_type(image)[0]
    if not (mime and mime.startswith("image/")):
        mime = next((m for sig, m in SIGNATURES.items() if data.startswith(sig)), None)
    if not mime:
        raise ValueError("not a PNG, JPEG, GIF or WebP image")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def main() -> None:
    p = common.parser(__doc__, default_prompt="Describe this image in one sentence.")
    p.add_argument("--image", required=True, help="local image file or http(s) URL")
    args = common.parse_args(p)
    try:
        url = image_url(args.image)
    except (OSError, ValueError) as e:
        p.error(f"--image {args.image}: {getattr(e, 'strerror', None) or e}")

    with common.friendly_errors(args):
        client = common.client(args)
        model = common.pick_model(client, args.model)
        start = time.monotonic()
        reply = client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": args.prompt},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            max_tokens=args.max_tokens,
        )
        print(reply.choices[0].message.content)
        common.usage_line(args, model, reply.usage, time.monotonic() - start)


if __name__ == "__main__":
    main()
