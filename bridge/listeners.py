"""TLS and authentication of a listener, the same for every one: the HTTP server's and a
plugin's own (the OTLP receivers): ``tls_context`` loads a server certificate (errors name the
config path and the file), ``authorized`` checks an ``Authorization`` header against a bearer
token or basic credentials in constant time, ``auth_challenge`` is a 401's ``WWW-Authenticate``.
"""

from __future__ import annotations

import base64
import hmac
import os
import ssl

from bridge.config import AuthConfig, TLSConfig

__all__ = ["auth_challenge", "authorized", "tls_context"]


def tls_context(tls: TLSConfig | None, where: str) -> ssl.SSLContext | None:
    """A server TLS context for ``tls`` (None without it); OSError naming ``where`` (the config
    path, e.g. ``server.tls``) and the file when a file cannot be read or loaded."""
    if tls is None:
        return None
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not os.access(path, os.R_OK):
            why = "no such file" if not path.exists() else "not readable"
            raise OSError(f"{where}.{key}: cannot read {path}: {why}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as e:
        raise OSError(f"{where}: cannot load the certificate {tls.cert_file} with the key {tls.key_file}: "
                      f"{getattr(e, 'reason', None) or e}") from None
    return ctx


def authorized(auth: AuthConfig, header: str) -> bool:
    """Whether an ``Authorization`` header value carries ``auth``'s bearer token or basic
    credentials (compared in constant time)."""
    if auth.bearer_token is not None and header.startswith("Bearer "):
        if hmac.compare_digest(header[7:].encode(), auth.bearer_token.get_secret_value().encode()):
            return True
    if auth.basic is not None and header.startswith("Basic "):
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            user, pw = "", ""
        ok_user = hmac.compare_digest(user.encode(), auth.basic.username.encode())
        ok_pw = hmac.compare_digest(pw.encode(), auth.basic.password.get_secret_value().encode())
        if ok_user and ok_pw:
            return True
    return False


def auth_challenge(auth: AuthConfig) -> str:
    """The ``WWW-Authenticate`` value a 401 for ``auth`` carries."""
    return 'Basic realm="monbridge"' if auth.basic is not None else 'Bearer realm="monbridge"'
