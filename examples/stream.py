#!/usr/bin/env python3
"""Stream a chat reply from the OpenAI-compatible API, printing tokens as they arrive.

Example:
  export OPENAI_BASE_URL=http://gateway:8000/v1 OPENAI_API_KEY=...
  python stream.py "Tell me a story."

--timeout bounds the wait for each chunk, not the whole answer.
"""

import time

import _common as common


def main() -> None:
    parser = common.parser(__doc__, default_prompt="Count from one to ten in words.")
    args = common.parse_args(parser)
    with common.friendly_errors(args):
        client = common.client(args)
        model = common.pick_model(client, args.model)
        start = time.monotonic()
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": args.prompt}],
            max_tokens=args.max_tokens,
            stream=True,
            stream_options={"include_usage": True},  # last chunk: token counts
        )
        usage = None
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
                usage = chunk.usage or usage
        finally:
            print()  # end the line, even if the stream breaks off
        common.usage_line(args, model, usage, time.monotonic() - start)


if __name__ == "__main__":
    main()
