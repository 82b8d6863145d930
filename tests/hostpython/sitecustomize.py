"""The control node's test-world caches: compiled module sources (the AWS modules run on localhost)
and the AnsiballZ zips of one suite run."""

import kit_ansiballz_cache  # noqa: F401
import kit_zipimport_cache  # noqa: F401
