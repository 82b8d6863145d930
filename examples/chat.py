#!/usr/bin/env python3
"""Send one chat message to the OpenAI-compatible API and print the reply.

Example:
  export OPENAI_BASE_URL=http://gateway:8000/v1 OPENAI_API_KEY=...
  python chat.py "Why is the sky blue?"
"""

import time

import _common as common


def main() -> None:
    parser = common.parser(__doc__, default_prompt="Say hello in one short sentence.")
    args = common.parse_args(parser)
    with common.friendly_errors(args):
        client = common.client(args)
        model = common.pick_model(client, args.model)
        start = time.monotonic()
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": args.prompt}],
            max_tokens=args.max_tokens,
        )
        print(reply.choices[0].message.content)
        common.usage_line(args, model, reply.usage, time.monotonic() - start)


if __name__ == "__main__":
    main()
