"""TLS for rts-server: the SSL context of ``rts-server --tls-cert FILE --tls-key FILE`` and
``serve_in_thread(..., tls=(cert, key))``, which serve ``wss://`` and ``https://`` on their one
port.

TLS 1.2 or newer, the ``ssl`` module's default ciphers; no client certificates.
"""

from __future__ import annotations

import ssl

__all__ = ["server_ssl_context"]


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context with the certificate chain ``cert_file`` (PEM, the server's own
    certificate first, then any intermediates) and its private key ``key_file`` (PEM).

    Raises ValueError, naming the file, when either cannot be read or they do not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise ValueError("TLS: cannot read %s: %s" % (exc.filename, exc.strerror)) from exc
    except OSError as exc:  # ssl.SSLError included: not PEM, or the key is not the cert's
        raise ValueError("TLS: cannot use certificate %s with key %s: %s"
                         % (cert_file, key_file, exc)) from exc
    return ctx
