"""The SDK's TLS settings for ``wss://``: certificate and hostname verification always on,
against the system's trusted CAs, or the CAs of the ``tls_ca_file`` runtime parameter instead
(a private CA, a self-signed test server).

Threading: ``client_ssl_context`` may be called from any thread (each engine's supervisor
thread calls it); it keeps the last context it made, to reuse while the CA file stays the same,
and SSL contexts may be shared by threads.
"""

from __future__ import annotations

import os
import ssl
from typing import Optional, Tuple

__all__ = ["client_ssl_context"]

_last: Optional[Tuple[Tuple[str, int], ssl.SSLContext]] = None


def client_ssl_context(ca_file: str = "") -> ssl.SSLContext:
    """A client context that requires a certificate valid for the host name, issued by a CA in
    ``ca_file`` (PEM), or by one the system trusts when ``ca_file`` is empty. TLS 1.2 or newer.

    Raises OSError (ssl.SSLError included) when ``ca_file`` cannot be read or holds no CA.
    """
    global _last
    key = (ca_file, os.stat(ca_file).st_mtime_ns if ca_file else 0)
    if _last is not None and _last[0] == key:
        return _last[1]
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # verify_mode CERT_REQUIRED, check_hostname
    _last = (key, ctx)
    return ctx
