"""Public plugin API: helpers any plugin may use.

* Redaction: ``redact_text`` (the configured secrets masked), ``peer_excerpt`` (a bounded,
  redacted excerpt of what a peer answered, for an error message) and ``EXCERPT_BYTES`` (how much
  of an answer to read for one); ``LogLimit`` (a warning at most once a minute per reason).
* Tasks: ``cancel_and_wait`` (cancel tasks, waiting a bounded time) and ``run_bounded`` (await
  with a timeout that also bounds a coroutine ignoring its cancellation); ``gc_paused`` (a large
  batch built without the cyclic garbage collector walking the heap meanwhile) and
  ``release_free_memory`` (the C heap's free pages given back to the system after one).
* Config: ``parse_listen`` (``HOST:PORT``), ``ConfigError`` (an error naming file, line and
  path) and, for plugins reading files of their own as the config is read (``file_sd``),
  ``read_regular_file``, ``read_document``, ``NotARegularFile``, ``line_map`` and ``locate``;
  ``MAX_SHARDS``, the most shards (concurrent senders) a durable queue of ``bridge.delivery`` has.
* Listeners of a plugin's own (the OTLP receivers): ``TLSConfig`` and ``AuthConfig`` (the
  server's config models), ``tls_context``, ``authorized`` and ``auth_challenge`` (as the server
  checks them), ``ConnectionGuard`` (slowloris and idle connections closed) and ``HttpListener``
  (a plugin's aiohttp listener with TLS and that guard), and for request
  bodies ``read_body``, ``receive_body`` (read as sent within a time), ``inflate`` (a body read
  compressed, decompressed in a worker thread: gzip, deflate, zstd), ``parse_json``,
  ``BodyLimits`` and ``BodyError`` (bounded, off the event loop when large).

Plugins import these names from here, never from the modules that define them. Each name loads
only the module that defines it, when first used (``peer_excerpt`` does not load asyncio).
"""

from typing import TYPE_CHECKING

from bridge.lazy import lazy_names

if TYPE_CHECKING:
    from bridge.config import (
        AuthConfig,
        ConfigError,
        NotARegularFile,
        TLSConfig,
        line_map,
        locate,
        parse_listen,
        read_document,
        read_regular_file,
    )
    from bridge.diskqueue import MAX_SHARDS
    from bridge.httpbody import BodyError, BodyLimits, inflate, parse_json, read_body, read_up_to, receive_body
    from bridge.listeners import ConnectionGuard, HttpListener, auth_challenge, authorized, tls_context
    from bridge.logs import EXCERPT_BYTES, LogLimit, peer_excerpt, redact_text
    from bridge.tasks import cancel_and_wait, gc_paused, release_free_memory, run_bounded

__all__ = [
    "EXCERPT_BYTES",
    "MAX_SHARDS",
    "AuthConfig",
    "BodyError",
    "BodyLimits",
    "ConfigError",
    "ConnectionGuard",
    "HttpListener",
    "LogLimit",
    "NotARegularFile",
    "TLSConfig",
    "auth_challenge",
    "authorized",
    "parse_json",
    "read_body",
    "read_up_to",
    "receive_body",
    "tls_context",
    "inflate",
    "cancel_and_wait",
    "gc_paused",
    "line_map",
    "locate",
    "parse_listen",
    "peer_excerpt",
    "read_document",
    "read_regular_file",
    "redact_text",
    "release_free_memory",
    "run_bounded",
]

__getattr__, __dir__ = lazy_names(__name__, {
    **dict.fromkeys(("AuthConfig", "ConfigError", "NotARegularFile", "TLSConfig", "line_map", "locate", "parse_listen",
                     "read_document", "read_regular_file"), "bridge.config"),
    "MAX_SHARDS": "bridge.diskqueue",
    **dict.fromkeys(("BodyError", "BodyLimits", "inflate", "parse_json", "read_body", "read_up_to", "receive_body"),
                    "bridge.httpbody"),
    **dict.fromkeys(("ConnectionGuard", "HttpListener", "auth_challenge", "authorized", "tls_context"),
                    "bridge.listeners"),
    **dict.fromkeys(("EXCERPT_BYTES", "LogLimit", "peer_excerpt", "redact_text"), "bridge.logs"),
    **dict.fromkeys(("cancel_and_wait", "gc_paused", "release_free_memory", "run_bounded"), "bridge.tasks"),
}, globals())
