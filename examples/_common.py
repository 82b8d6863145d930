"""Shared plumbing for the example clients: flags, client, model discovery, errors.

Every example builds its parser with `parser()`, reads it with `parse_args()`,
wraps its work in `friendly_errors()` and gets a ready client from `client()`
and a model name from `pick_model()`. Errors become one line on stderr and an
exit code: 1 for an error reported by the server (or no model served),
2 for a usage error, 3 when the server cannot be reached or goes silent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import openai
from openai.types import CompletionUsage as Usage

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# Used when no key is given, so servers without auth still work; a server that
# wants a key answers 401 and we say where the key should come from.
NO_KEY = "EMPTY"

EPILOG = """\
environment:
  OPENAI_BASE_URL  default for --base-url (else %(default_url)s); a bare
                   http://host:port gets /v1 appended
  OPENAI_API_KEY   default for --api-key
exit codes:
  0 ok, 1 the server reported an error (or serves no model), 2 usage error,
  3 server unreachable or no answer within --timeout
"""


def parser(doc: str | None, default_prompt: str) -> argparse.ArgumentParser:
    """Return a parser with the flags every example shares."""
    p = argparse.ArgumentParser(
        description=doc,
        epilog=EPILOG % {"default_url": DEFAULT_BASE_URL},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", nargs="?", default=default_prompt, help="default: %(default)r")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    p.add_argument("--api-key", help="default: $OPENAI_API_KEY")
    p.add_argument("--model", help="default: the first model listed at /v1/models")
    p.add_argument("--max-tokens", type=int, default=256, help="default: %(default)s")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait to connect and for each piece of the answer; a stream may take"
        " longer as long as tokens keep coming (default: %(default)s)",
    )
    p.add_argument("--retries", type=int, default=0, help="retries on connection errors, 429, 5xx (default: 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="print token usage and time on stderr")
    return p


def parse_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line, normalise the base URL, note where the key came from."""
    args = p.parse_args()
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    if args.max_tokens < 1:
        p.error("--max-tokens must be at least 1")
    url = args.base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if not urlsplit(url).path:
        url += "/v1"  # health routes live at the root, the API under /v1
    args.base_url = url
    if args.api_key:
        args.key_source = "--api-key"
    elif os.environ.get("OPENAI_API_KEY"):
        args.api_key, args.key_source = os.environ["OPENAI_API_KEY"], "OPENAI_API_KEY"
    else:
        args.api_key, args.key_source = NO_KEY, None
    return args


def client(args: argparse.Namespace) -> openai.OpenAI:
    """Build the client. httpx timeouts are per operation, not totals: `read` bounds
    the wait for each chunk, so a long stream that keeps producing is never cut off."""
    timeout = openai.Timeout(args.timeout, connect=min(args.timeout, 10.0))
    return openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=timeout, max_retries=args.retries)


class NoModel(Exception):
    """The server lists no model."""


def pick_model(c: openai.OpenAI, wanted: str | None) -> str:
    """Return `wanted`, or the first model the server lists."""
    if wanted:
        return wanted
    models = c.models.list().data
    if not models:
        raise NoModel(f"the server at {str(c.base_url).rstrip('/')} serves no model (/v1/models is empty)")
    return models[0].id


def usage_line(args: argparse.Namespace, model: str, usage: Usage | None, seconds: float) -> None:
    """With --verbose, print model, tokens and time on stderr (stdout holds only the answer)."""
    if args.verbose:
        tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} new tokens" if usage else "no usage"
        print(f"[{model}: {tokens}, {seconds:.2f}s]", file=sys.stderr)


def _server_message(e: openai.APIStatusError) -> str:
    """The error text the server sent, without the SDK's 'Error code: ...' wrapping."""
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return str(msg)
    return e.response.text.strip()[:300] or e.response.reason_phrase


@contextlib.contextmanager
def friendly_errors(args: argparse.Namespace) -> Iterator[None]:
    """Turn the SDK's exceptions into one line on stderr and an exit code."""

    def fail(code: int, msg: str) -> None:
        sys.stdout.flush()
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(code)

    try:
        yield
    except openai.AuthenticationError:
        if args.key_source:
            fail(1, f"HTTP 401: the server rejected the API key from {args.key_source}: it is wrong")
        fail(1, "HTTP 401: the server wants an API key: set OPENAI_API_KEY or pass --api-key")
    except openai.APITimeoutError:
        fail(3, f"{args.base_url} sent nothing for {args.timeout:g}s (see --timeout)")
    except openai.APIConnectionError as e:
        fail(3, f"connection to {args.base_url} failed ({e.__cause__ or e}); is the server up?")
    except openai.APIStatusError as e:
        fail(1, f"HTTP {e.status_code} from {args.base_url}: {_server_message(e)}")
    except NoModel as e:
        fail(1, str(e))
    except openai.OpenAIError as e:  # e.g. an error event inside a stream
        fail(1, f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        fail(130, "interrupted")
