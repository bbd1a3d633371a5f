"""Public plugin API: helpers any plugin may use.

* Redaction: ``redact_text`` (the configured secrets masked), ``peer_excerpt`` (a bounded,
  redacted excerpt of what a peer answered, for an error message) and ``EXCERPT_BYTES`` (how much
  of an answer to read for one).
* Tasks: ``cancel_and_wait`` (cancel tasks, waiting a bounded time) and ``run_bounded`` (await
  with a timeout that also bounds a coroutine ignoring its cancellation); ``gc_paused`` (a large
  batch built without the cyclic garbage collector walking the heap meanwhile).
* Config: ``parse_listen`` (``HOST:PORT``), ``ConfigError`` (an error naming file, line and
  path) and, for plugins reading files of their own as the config is read (``file_sd``),
  ``read_regular_file``, ``read_document``, ``NotARegularFile``, ``line_map`` and ``locate``.

Plugins import these names from here, never from the modules that define them.
"""

from bridge.config import ConfigError, NotARegularFile, line_map, locate, parse_listen, read_document, read_regular_file
from bridge.logs import EXCERPT_BYTES, peer_excerpt, redact_text
from bridge.tasks import cancel_and_wait, gc_paused, run_bounded

__all__ = [
    "EXCERPT_BYTES",
    "ConfigError",
    "NotARegularFile",
    "cancel_and_wait",
    "gc_paused",
    "line_map",
    "locate",
    "parse_listen",
    "peer_excerpt",
    "read_document",
    "read_regular_file",
    "redact_text",
    "run_bounded",
]
