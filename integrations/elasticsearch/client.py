"""The official Elasticsearch client (async, on aiohttp), built from the integration's config.

The client's own retries are off (``max_retries=0``): retries follow the shared delivery rules
(``bridge.delivery``) in the exporter, and a search that fails fails that search's round. The
secrets (API key, password, bearer token) go to the client only; ``describe`` names the
cluster without them. The transport's own log of every request (INFO) is kept to warnings: the
exporter and the searches log what a person needs, rate-limited.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from integrations.elasticsearch.config import ElasticsearchConfig

__all__ = ["describe", "make_client"]


def make_client(cfg: ElasticsearchConfig) -> Any:
    """An ``AsyncElasticsearch`` for ``cfg`` (the import is here: validating a config loads no client)."""
    from elasticsearch import AsyncElasticsearch

    logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {"request_timeout": cfg.request_timeout, "max_retries": 0, "retry_on_timeout": False,
                              "node_class": "aiohttp"}
    if cfg.cloud_id is not None:
        kwargs["cloud_id"] = cfg.cloud_id
    else:
        kwargs["hosts"] = list(cfg.hosts or ())
    if cfg.api_key is not None:
        kwargs["api_key"] = cfg.api_key.get_secret_value()
    elif cfg.basic_auth is not None:
        kwargs["basic_auth"] = (cfg.basic_auth.username, cfg.basic_auth.password.get_secret_value())
    elif cfg.bearer_token is not None:
        kwargs["bearer_auth"] = cfg.bearer_token.get_secret_value()
    if cfg.tls is not None:
        if cfg.tls.ca_file is not None:
            kwargs["ca_certs"] = cfg.tls.ca_file
        if cfg.tls.ca_fingerprint is not None:
            kwargs["ssl_assert_fingerprint"] = cfg.tls.ca_fingerprint.replace(":", "").lower()
        if not cfg.tls.verify:
            kwargs["verify_certs"] = False
    return AsyncElasticsearch(**kwargs)


def describe(cfg: ElasticsearchConfig) -> str:
    """The cluster as logs and errors name it: host URLs without credentials, or the cloud id's name."""
    if cfg.cloud_id is not None:
        return f"cloud {cfg.cloud_id.split(':', 1)[0]}"
    out = []
    for h in cfg.hosts or ():
        u = urllib.parse.urlsplit(h)
        netloc = u.hostname or ""
        if u.port:
            netloc += f":{u.port}"
        out.append(f"{u.scheme}://{netloc}{u.path.rstrip('/')}")
    return ", ".join(out)
