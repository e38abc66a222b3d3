"""Volcengine's V4 request signature (``HMAC-SHA256``), for the push API and application servers.

The same scheme as the official ``volcengine`` package's ``SignerV4`` (and Volcengine's OpenAPI
gateway): a canonical request ::

    METHOD \\n URI \\n sorted, escaped query \\n signed headers "name:value\\n"... \\n
    signed header names (";"-joined) \\n hex SHA-256 of the body

is hashed into the string to sign ``"HMAC-SHA256\\n" X-Date "\\n" scope "\\n" hash``, where the
scope is ``date/region/service/request``; the key is derived from the secret key by HMAC over
date, region, service and ``"request"``; the request carries ``X-Date``
(``YYYYMMDD'T'HHMMSS'Z'``, UTC), ``X-Content-Sha256`` and
``Authorization: HMAC-SHA256 Credential=AK/scope, SignedHeaders=..., Signature=hex``.

:func:`sign_request` signs a request (for an application server calling the push API, without
installing ``volcengine``); :func:`verify_request` checks one (the server side) and raises
:class:`AuthError` with Volcengine's error code and HTTP status when it must be refused;
:class:`ReplayCache` remembers signatures to refuse replays.

Pure functions: no sockets, no event loop; the clock is passed in.
"""

from __future__ import annotations

import calendar
import hashlib
import heapq
import hmac
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "ALGORITHM",
    "DEFAULT_REGION",
    "DEFAULT_SERVICE",
    "AuthError",
    "ReplayCache",
    "SignedRequest",
    "canonical_query",
    "sign_request",
    "verify_request",
]

ALGORITHM = "HMAC-SHA256"
#: The region and service of Volcengine's RTC OpenAPI (what the official SDKs sign with).
DEFAULT_REGION = "cn-north-1"
DEFAULT_SERVICE = "rtc"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


class AuthError(Exception):
    """A request that must be refused: Volcengine's error ``code`` (e.g. SignatureDoesNotMatch),
    the HTTP ``status`` to answer with and a ``message`` that says what is wrong."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SignedRequest:
    """What a verified request was signed with."""

    access_key: str
    region: str
    service: str
    #: The signature (hex), unique per request unless the request is replayed.
    signature: str
    #: ``X-Date`` as a Unix timestamp.
    timestamp: float


def _sha256_hex(data: Union[bytes, str]) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(secret_key.encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "request")


def canonical_query(pairs: Iterable[Tuple[str, str]]) -> str:
    """Query parameters sorted by name (a repeated name keeps its values' order), each name and
    value percent-escaped except ``A-Z a-z 0-9 - _ . ~``."""
    ordered = sorted(pairs, key=lambda kv: kv[0])
    return "&".join("%s=%s" % (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in ordered)


def _canonical_uri(path: str) -> str:
    return quote(path or "/").replace("+", "%20")


def _host_value(host: str) -> str:
    """The Host header as signed: ``name:80`` and ``name:443`` become ``name`` (the rule of the
    ``volcengine`` package, kept exactly, quirks included)."""
    if ":" in host:
        split = host.split(":")
        if split[1] in ("80", "443"):
            return split[0]
    return host


def _signature(secret_key: str, method: str, path: str, query: str,
               headers: Sequence[Tuple[str, str]], body_hash: str, x_date: str, region: str,
               service: str) -> str:
    signed_names = ";".join(name for name, _ in headers)
    canonical = "\n".join([method.upper(), _canonical_uri(path), query,
                           "".join("%s:%s\n" % (n, v) for n, v in headers), signed_names,
                           body_hash])
    scope = "/".join([x_date[:8], region, service, "request"])
    to_sign = "\n".join([ALGORITHM, x_date, scope, _sha256_hex(canonical)])
    key = _signing_key(secret_key, x_date[:8], region, service)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_request(method: str, url: str, body: Union[bytes, str], access_key: str,
                 secret_key: str, *, headers: Optional[Mapping[str, str]] = None,
                 region: str = DEFAULT_REGION, service: str = DEFAULT_SERVICE,
                 now: Optional[float] = None) -> Dict[str, str]:
    """The headers to send with a signed request: ``headers`` (Content-Type defaults to
    ``application/json``) plus ``Host``, ``X-Date``, ``X-Content-Sha256`` and ``Authorization``.

    Signs like the ``volcengine`` package: Content-Type, Content-Md5, Host and every ``X-``
    header are signed. ``now`` (Unix time) is for tests. Example (an application server calling
    the push API of an rts-server at ``http_url``)::

        body = json.dumps({"AppId": app_id, "From": "server", "To": "alice",
                           "Binary": False, "Message": "hello"}).encode()
        url = http_url + "/?Action=SendUnicast&Version=2020-12-01"
        req = urllib.request.Request(url, body, sign_request("POST", url, body, AK, SK),
                                     method="POST")
    """
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError("url must be absolute (scheme://host/...), got %r" % url)
    out: Dict[str, str] = dict(headers or {})
    if not any(k.lower() == "content-type" for k in out):
        out["Content-Type"] = "application/json"
    out["Host"] = parts.netloc
    x_date = time.strftime(_DATE_FORMAT, time.gmtime(time.time() if now is None else now))
    out["X-Date"] = x_date
    body_hash = _sha256_hex(body)
    out["X-Content-Sha256"] = body_hash
    signed: Dict[str, str] = {}
    for name, value in out.items():
        if name.lower() in ("content-type", "content-md5", "host") or name.lower().startswith("x-"):
            signed[name.lower()] = _host_value(value) if name.lower() == "host" else value
    pairs = sorted(signed.items())
    query = canonical_query(parse_qsl(parts.query, keep_blank_values=True))
    sig = _signature(secret_key, method, parts.path, query, pairs, body_hash, x_date, region,
                     service)
    out["Authorization"] = "%s Credential=%s/%s/%s/%s/request, SignedHeaders=%s, Signature=%s" % (
        ALGORITHM, access_key, x_date[:8], region, service, ";".join(n for n, _ in pairs), sig)
    return out


def _parse_authorization(value: str) -> Tuple[str, List[str], str]:
    """(credential, signed header names, signature) of an Authorization header."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError("InvalidAuthorization", 400,
                        "Authorization must start with %s, got %r" % (ALGORITHM, algorithm[:40]))
    fields: Dict[str, str] = {}
    for item in rest.split(","):
        name, eq, val = item.strip().partition("=")
        if eq:
            fields[name.strip()] = val.strip()
    credential = fields.get("Credential")
    signed = fields.get("SignedHeaders")
    if not credential or signed is None:
        raise AuthError("InvalidAuthorization", 400,
                        "Authorization needs Credential=..., SignedHeaders=..., Signature=...")
    signature = fields.get("Signature")
    if not signature:
        raise AuthError("MissingSignature", 401, "The request is missing signature.")
    return credential, [h for h in signed.lower().split(";") if h], signature


def _parse_x_date(x_date: Optional[str]) -> float:
    if not x_date:
        raise AuthError("MissingRequestInfo", 400, "The request is missing X-Date information.")
    try:
        return float(calendar.timegm(time.strptime(x_date, _DATE_FORMAT)))
    except ValueError:
        raise AuthError("InvalidTimestamp", 403,
                        "X-Date %r is not a UTC time of the form YYYYMMDD'T'HHMMSS'Z'"
                        % x_date[:40]) from None


def verify_request(method: str, path: str, query: Iterable[Tuple[str, str]],
                   headers: Iterable[Tuple[str, str]], body: bytes,
                   secret_keys: Mapping[str, str], now: float, skew: float) -> SignedRequest:
    """Check a request's V4 signature; return what it was signed with, or raise AuthError.

    ``path`` is the decoded URL path, ``query`` the decoded query parameters and ``headers`` the
    request's headers, as (name, value) pairs in the order received; ``secret_keys`` maps access
    key ids to secret keys. Refused: no or malformed Authorization, an unknown access key, a
    signature that does not include ``host`` and ``x-date``, an ``X-Date`` more than ``skew``
    seconds from ``now``, an ``X-Content-Sha256`` that is not the body's hash, and any signature
    that does not match (wrong secret, changed body, query or signed header).
    """
    lowered: Dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        lowered[key] = (lowered[key] + "," + value) if key in lowered else value
    auth = lowered.get("authorization")
    if not auth:
        raise AuthError("MissingAuthenticationToken", 401,
                        "Request is missing Authentication Token (an Authorization header "
                        "signed with HMAC-SHA256).")
    credential, signed_names, signature = _parse_authorization(auth)
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "request" or not scope[0]:
        raise AuthError("InvalidCredential", 400,
                        "Credential must be AK/date/region/service/request, got %r" % credential[:200])
    access_key, date, region, service = scope[:4]
    secret_key = secret_keys.get(access_key)
    if secret_key is None:
        raise AuthError("InvalidAccessKey", 401,
                        "The accesskey [%s] included in the request is invalid." % access_key[:64])
    for required in ("host", "x-date"):
        if required not in signed_names:
            raise AuthError("InvalidAuthorization", 400,
                            "SignedHeaders must include host and x-date")
    x_date = lowered.get("x-date")
    timestamp = _parse_x_date(x_date)
    assert x_date is not None
    if date != x_date[:8]:
        raise AuthError("InvalidCredential", 400,
                        "the date in Credential (%s) is not the date of X-Date (%s)"
                        % (date[:16], x_date[:8]))
    if abs(now - timestamp) > skew:
        raise AuthError("InvalidTimestamp", 403,
                        "The Signature of the request is expired: X-Date %s is %d s away from "
                        "the server's clock (at most %d s allowed)."
                        % (x_date, int(abs(now - timestamp)), int(skew)))
    body_hash = _sha256_hex(body)
    claimed = lowered.get("x-content-sha256")
    if claimed is not None and claimed.lower() != body_hash:
        raise AuthError("SignatureDoesNotMatch", 401,
                        "X-Content-Sha256 is not the SHA-256 of the request body (the body was "
                        "changed after signing).")
    pairs: List[Tuple[str, str]] = []
    for name in signed_names:
        got = lowered.get(name)
        if got is None:
            raise AuthError("InvalidAuthorization", 400,
                            "signed header %r is not in the request" % name[:64])
        pairs.append((name, _host_value(got) if name == "host" else got))
    expected = _signature(secret_key, method, path, canonical_query(query), pairs, body_hash,
                          x_date, region, service)
    if not hmac.compare_digest(expected, signature.lower()):
        raise AuthError("SignatureDoesNotMatch", 401,
                        "The request signature we calculated does not match the signature you "
                        "provided. Check your Secret Access Key and signing method.")
    return SignedRequest(access_key, region, service, signature.lower(), timestamp)


class ReplayCache:
    """Signatures seen recently: a signature seen again before it expires is a replay.

    An entry expires when its request's ``X-Date`` falls out of the accepted window, after which
    the request is refused as stale anyway. Holds at most ``max_entries``; :meth:`add` returns
    None when full (the caller refuses the request rather than forget older signatures).

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self, max_entries: int = 250_000) -> None:
        self.max_entries = max_entries
        self._expiry: Dict[str, float] = {}
        self._heap: List[Tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, signature: str, expires: float, now: float) -> Optional[bool]:
        """Record ``signature`` until ``expires``: True if new, False if seen (a replay), None
        if the cache is full."""
        heap = self._heap
        while heap and heap[0][0] < now:
            _, sig = heapq.heappop(heap)
            self._expiry.pop(sig, None)
        if signature in self._expiry:
            return False
        if len(self._expiry) >= self.max_entries:
            return None
        self._expiry[signature] = expires
        heapq.heappush(heap, (expires, signature))
        return True
