"""The control node's modules (the AWS ones, on localhost) use the test world's bytecode cache."""

import kit_zipimport_cache  # noqa: F401
