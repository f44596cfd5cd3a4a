"""The one HTTP client for URLs we did not write ourselves: user reference URLs and provider output URLs.

docs/reliability.md §3.1 (OWASP SSRF): only http(s), no credentials in the URL, and only public addresses,
except the hosts a caller passes as `trusted`: the staff-configured hosts of the one provider whose output is
being fetched (a ComfyUI server, the test simulator; see HttpApi.fetch_trusted_hosts). Trust is scoped to the
URL it was given for: a redirect is trusted only while it stays on that same trusted origin, and every other
hop is judged by the public-address rules, so a trusted host cannot bounce a fetch to 169.254.169.254 or to
another port on its own machine.

Two checks, because one is not enough:
  1. Before each request (and each redirect hop), the host is resolved and every address must be public.
     This is what gives a clear error early, and what `validate_url` runs for forms.
  2. When a connection is opened, the address actually connected to is checked again (`sock.getpeername()`).
     Between 1 and 2 the name is resolved a second time by urllib3, and a hostile DNS server can answer
     differently the second time (DNS rebinding); 2 is the check that cannot be raced.
Redirects are followed by hand so that every hop goes through both checks, and bodies are streamed with a
byte cap so a hostile server cannot fill memory.

Provider API keys never go through here: callers do not pass them, and caller headers are dropped when a
redirect leaves the original origin.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from generation.lib.retry import is_retryable_status, parse_retry_after
from generation.lib.sizes import megabytes

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 408 and 425 say "try again"; 429 is rate limiting. Every other 4xx will answer the same next time.
_CHUNK_SIZE = 64 * 1024
_MAX_URL_LENGTH = 8192

# Not all "special" ranges are flagged by ipaddress (notably CGNAT shared space and NAT64 prefixes).
_EXTRA_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # carrier-grade NAT: inside someone's network, not the internet
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use NAT64
        "2001::/32",  # Teredo: the embedded server/client addresses cannot be judged reliably
        "fec0::/10",  # deprecated site-local
    )
)
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")

MESSAGE_SCHEME = "Only http and https URLs can be fetched."
MESSAGE_PRIVATE = "That address is private or local and cannot be fetched."
MESSAGE_USERINFO = "URLs with a user name or password cannot be fetched."
MESSAGE_NO_HOST = "That URL has no host name."
MESSAGE_BAD_PORT = "That URL's port is not valid."
MESSAGE_BAD_CHARACTERS = "That URL contains spaces, backslashes or control characters."
MESSAGE_TOO_LONG = "That URL is too long."
MESSAGE_NOT_FOUND = "That address could not be found."


class UnsafeURLError(ValueError):
    """The URL may not be fetched: wrong scheme, credentials in it, or a private/local address.

    `str(exc)` is a sentence fit for the user. Never worth retrying.
    """


class DownloadError(Exception):
    """The fetch failed. `permanent` says whether trying the same URL again could succeed.

    Permanent: 4xx other than 408/425/429, a body over the byte cap, too many redirects, an unknown host,
    a TLS certificate that does not verify. Not permanent: timeouts, connection errors, 408/425/429 and 5xx;
    `retry_after` is then the server's Retry-After in seconds, or None. `status` is the HTTP status if any.
    """

    def __init__(
        self, message: str, *, permanent: bool, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status


class _HostNotFoundError(Exception):
    def __init__(self, host: str, error: socket.gaierror) -> None:
        super().__init__(f"{host}: {error}")
        self.error = error


@dataclass(frozen=True)
class Download:
    """A fetched body. `content_type` is the media type alone, lower case ("image/png"), or
    "application/octet-stream" when the server sent none; it is the server's claim, not checked.
    `url` is the final URL after redirects. Fetched `into` a file, `data` is empty and `size` is
    what was written."""

    data: bytes
    content_type: str
    url: str
    size: int = 0


# --- address rules --------------------------------------------------------------------------------------------


def is_public_address(ip: IPAddress) -> bool:
    """True if `ip` is a globally routable unicast address (one a stranger on the internet could own)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that embed an IPv4 address are judged by it: ::ffff:127.0.0.1 is loopback.
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip in _NAT64_WELL_KNOWN:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.is_site_local:
            return False
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        return False
    return not any(ip in network for network in _EXTRA_BLOCKED_NETWORKS)


_TrustedHosts = frozenset[tuple[str, int | None]]


def _parse_trusted(entries: Collection[str]) -> _TrustedHosts:
    """("host", port) pairs from "host", "host:port", "[v6]:port" or even "http://host:port"; port None: any."""
    parsed: set[tuple[str, int | None]] = set()
    for entry in entries:
        text = entry.strip().lower()
        if not text:
            continue
        parts = urlsplit(text if "://" in text else f"//{text}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            logger.warning("trusted host entry %r is not host or host:port; ignored", entry)
            continue
        if host:
            parsed.add((host.rstrip("."), port))
    return frozenset(parsed)


def _is_trusted(host: str, port: int, trusted: _TrustedHosts) -> bool:
    host = host.lower().rstrip(".")
    return (host, None) in trusted or (host, port) in trusted


# The trusted set of the hop fetch() is sending in this thread, for the connection-time check, which has no
# other way to receive it: connections are created deep inside urllib3's pools.
_current_trusted: contextvars.ContextVar[_TrustedHosts] = contextvars.ContextVar(
    "generation_http_trusted", default=frozenset()
)


def _split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `url`, or UnsafeURLError for anything but a plain http(s) URL."""
    if not isinstance(url, str) or not url:
        raise UnsafeURLError(MESSAGE_NO_HOST)
    if len(url) > _MAX_URL_LENGTH:
        raise UnsafeURLError(MESSAGE_TOO_LONG)
    # Parsers disagree about backslashes and control characters (urlsplit vs urllib3 vs browsers); a URL
    # that contains none has one reading only.
    if any(c.isspace() or c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURLError(MESSAGE_BAD_CHARACTERS)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeURLError(MESSAGE_SCHEME)
    if "@" in parts.netloc:
        raise UnsafeURLError(MESSAGE_USERINFO)
    host = parts.hostname
    if not host:
        raise UnsafeURLError(MESSAGE_NO_HOST)
    try:
        port = parts.port
    except ValueError:
        raise UnsafeURLError(MESSAGE_BAD_PORT) from None
    if port == 0:
        raise UnsafeURLError(MESSAGE_BAD_PORT)
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _HostNotFoundError(host, exc) from exc
    except UnicodeError as exc:  # an IDNA label that cannot be encoded
        raise _HostNotFoundError(host, socket.gaierror(socket.EAI_NONAME, str(exc))) from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _check_url(url: str, trusted: _TrustedHosts) -> tuple[str, str, int]:
    """Raise UnsafeURLError unless `url` may be fetched; _HostNotFoundError if its host does not resolve."""
    scheme, host, port = _split_url(url)
    if _is_trusted(host, port, trusted):
        return scheme, host, port
    addresses = _resolve(host, port)
    if not addresses:
        raise _HostNotFoundError(host, socket.gaierror(socket.EAI_NONAME, "no addresses"))
    # Every address, not just the first: the connection may use any of them.
    if not all(is_public_address(ip) for ip in addresses):
        logger.info("refused %s: %s resolves to %s", url, host, ", ".join(map(str, addresses)))
        raise UnsafeURLError(MESSAGE_PRIVATE)
    return scheme, host, port


def validate_url(url: str, *, trusted: Collection[str] = ()) -> None:
    """Raise UnsafeURLError (with a message for the user) unless fetch() would be allowed to try `url`.

    Resolves the host name, so it needs DNS and can take as long as a lookup does. Passing does not
    promise the fetch succeeds, only that it is not refused up front. `trusted` is as for fetch(): empty
    for anything a user typed, which must never reach a staff-configured private host.
    """
    try:
        _check_url(url, _parse_trusted(trusted))
    except _HostNotFoundError:
        raise UnsafeURLError(MESSAGE_NOT_FOUND) from None


# --- the connection-time check --------------------------------------------------------------------------------


class _PeerCheckMixin:
    """Checks the address a new connection actually reached, after urllib3 resolved and connected."""

    host: str
    port: int

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            if not _is_trusted(self.host, self.port, _current_trusted.get()):
                peer = ipaddress.ip_address(sock.getpeername()[0])
                if not is_public_address(peer):
                    # The pre-check passed, so the name now resolves differently: rebinding, or a very
                    # unlucky DNS change. Either way nothing is sent.
                    logger.warning("refused connection to %s:%s: connected to %s", self.host, self.port, peer)
                    raise UnsafeURLError(MESSAGE_PRIVATE)
        except BaseException:
            sock.close()
            raise
        return sock


class _CheckedHTTPConnection(_PeerCheckMixin, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PeerCheckMixin, HTTPSConnection):
    pass


class _CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPConnectionPool,
            "https": _CheckedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # Through a proxy the peer would be the proxy, and the check above would mean nothing.
        raise RuntimeError("generation.lib.http does not fetch through proxies")


class _NoCookiesPolicy(DefaultCookiePolicy):
    # The session is shared by every user's fetches; a cookie set by one site must never be sent later.
    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False


def _new_session() -> requests.Session:
    session = requests.Session()
    # No proxies from the environment (see proxy_manager_for) and no credentials from ~/.netrc.
    session.trust_env = False
    session.cookies.set_policy(_NoCookiesPolicy())
    session.headers.update(
        {
            "User-Agent": "CharacterStudio/1.0 (+image fetch)",
            # Images are compressed already; asking for identity keeps the byte cap a cap on the wire too.
            "Accept-Encoding": "identity",
            "Accept": "image/png,image/jpeg,image/webp,*/*;q=0.5",
        }
    )
    adapter = _CheckedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_session = _new_session()


# --- fetch ---------------------------------------------------------------------------------------------------


def _host_not_found(exc: _HostNotFoundError) -> DownloadError:
    # EAI_NONAME/EAI_NODATA: the name does not exist. Anything else (EAI_AGAIN...) is the resolver having trouble.
    codes = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
    return DownloadError(MESSAGE_NOT_FOUND, permanent=exc.error.errno in codes)


def _origin(scheme: str, host: str, port: int) -> tuple[str, str, int]:
    return scheme, host.lower().rstrip("."), port


def _hop_trust(url: str, origin: tuple[str, str, int] | None, trusted: _TrustedHosts) -> _TrustedHosts:
    """The trusted hosts that apply to this hop: all of them for the first URL, and for a redirect only
    while it stays on the first URL's origin. Anywhere else a trusted host points is judged as a stranger's
    URL would be."""
    if origin is None or not trusted:
        return trusted
    try:
        scheme, host, port = _split_url(url)
    except UnsafeURLError:
        return frozenset()  # _check_url raises the same error with the right message
    return trusted if _origin(scheme, host, port) == origin else frozenset()


def _send(url: str, headers: dict[str, str] | None, timeout: tuple[float, float]) -> requests.Response:
    try:
        return _session.get(url, headers=headers, timeout=timeout, allow_redirects=False, stream=True)
    except requests.exceptions.SSLError as exc:
        raise DownloadError("The server's TLS certificate could not be verified.", permanent=True) from exc
    except requests.exceptions.Timeout as exc:
        raise DownloadError("The server did not answer in time.", permanent=False) from exc
    except requests.exceptions.ConnectionError as exc:
        raise DownloadError("Could not connect to the server.", permanent=False) from exc
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.InvalidHeader,
    ) as exc:
        raise DownloadError(f"The request could not be made: {exc}", permanent=True) from exc
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"The download failed: {exc}", permanent=False) from exc


def _raise_for_status(response: requests.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    retryable = is_retryable_status(status)
    raise DownloadError(
        f"The server answered {status} {response.reason or ''}".rstrip() + ".",
        permanent=not retryable,
        retry_after=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
        status=status,
    )


def _read_capped(
    response: requests.Response, max_bytes: int, deadline: float, into: BinaryIO | None = None
) -> tuple[bytes, int]:
    too_large = DownloadError(f"The file is larger than the {megabytes(max_bytes)} limit.", permanent=True)
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    try:
        # Content-Length can lie or be absent (chunked, close-delimited), so count what actually arrives.
        for chunk in response.iter_content(chunk_size=_CHUNK_SIZE):
            total += len(chunk)
            if total > max_bytes:
                raise too_large
            # The read timeout bounds each socket read, not the transfer; a server that trickles bytes
            # is stopped here, between chunks.
            if time.monotonic() > deadline:
                raise DownloadError("The download took too long.", permanent=False)
            if into is None:
                chunks.append(chunk)
            else:
                into.write(chunk)
    except requests.exceptions.ContentDecodingError as exc:
        raise DownloadError("The server sent a body that could not be decoded.", permanent=True) from exc
    except requests.exceptions.RequestException as exc:
        raise DownloadError("The download was interrupted.", permanent=False) from exc
    return b"".join(chunks), total


def fetch(
    url: str,
    *,
    max_bytes: int | None = None,
    timeout: tuple[float, float] = (3.05, 20.0),
    max_redirects: int = 3,
    headers: dict[str, str] | None = None,
    total_timeout: float = 120.0,
    trusted: Collection[str] = (),
    into: BinaryIO | None = None,
) -> Download:
    """GET `url` under the SSRF rules in the module docstring and return its body.

    Raises UnsafeURLError if the URL, or any redirect it leads to, is not allowed (never worth retrying),
    and DownloadError for everything else that goes wrong (see its `permanent` and `retry_after`).
    `max_bytes` defaults to settings.DOWNLOAD_MAX_BYTES; `timeout` is (connect, read) per socket operation,
    `total_timeout` a bound on the whole fetch checked between chunks. `headers` go to the original origin
    only, never to a redirect elsewhere. `trusted` ("host" or "host:port") are hosts exempt from the
    public-address rule for `url` itself and for redirects that stay on its origin; pass the trusted hosts
    of the provider the URL came from, and nothing for a user's URL. `into` (a file open for binary
    writing) receives the body as it arrives, under the same cap, instead of `data`: a large image
    is never held twice in memory (chunks and their join).
    """
    if max_bytes is None:
        max_bytes = settings.DOWNLOAD_MAX_BYTES
    trusted_hosts = _parse_trusted(trusted)
    deadline = time.monotonic() + total_timeout
    token = _current_trusted.set(frozenset())
    try:
        current = url
        origin: tuple[str, str, int] | None = None
        for _hop in range(max_redirects + 1):
            hop_trusted = _hop_trust(current, origin, trusted_hosts)
            try:
                scheme, host, port = _check_url(current, hop_trusted)
            except _HostNotFoundError as exc:
                raise _host_not_found(exc) from exc
            origin = origin or _origin(scheme, host, port)
            hop_headers = headers if _origin(scheme, host, port) == origin else None
            if time.monotonic() > deadline:
                raise DownloadError("The download took too long.", permanent=False)
            # The connection-time check must judge this hop by the same trust as the pre-check.
            _current_trusted.set(hop_trusted)
            response = _send(current, hop_headers, timeout)
            with response:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise DownloadError(
                            f"The server answered {response.status_code} without a Location.",
                            permanent=True,
                            status=response.status_code,
                        )
                    current = urljoin(current, location.strip())
                    continue
                _raise_for_status(response)
                data, size = _read_capped(response, max_bytes, deadline, into)
                media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                return Download(
                    data=data, content_type=media_type or "application/octet-stream", url=current, size=size
                )
        raise DownloadError(f"Too many redirects (more than {max_redirects}).", permanent=True)
    finally:
        _current_trusted.reset(token)


# --- upload ----------------------------------------------------------------------------------------------------


def upload(
    url: str,
    data: bytes | BinaryIO,
    *,
    content_type: str,
    timeout: tuple[float, float] = (3.05, 120.0),
    trusted: Collection[str] = (),
) -> int:
    """PUT `data` to `url` (a provider's signed upload URL, e.g. fal storage's upload_url) under the same
    SSRF rules as fetch, and return the 2xx status. No redirect is followed: a signed URL names its one
    destination. Only Content-Type is sent, never a credential: the signature is in the URL.

    Raises UnsafeURLError for a URL that may not be reached, DownloadError for any other failure (a
    timeout, a refusal), with `permanent` as fetch sets it; a redirect is permanent.
    """
    token = _current_trusted.set(frozenset())
    try:
        trusted_hosts = _parse_trusted(trusted)
        try:
            _check_url(url, trusted_hosts)
        except _HostNotFoundError as exc:
            raise _host_not_found(exc) from exc
        _current_trusted.set(trusted_hosts)
        try:
            response = _session.put(
                url, data=data, headers={"Content-Type": content_type}, timeout=timeout, allow_redirects=False
            )
        except requests.exceptions.Timeout as exc:
            raise DownloadError("The upload did not finish in time.", permanent=False) from exc
        except requests.exceptions.RequestException as exc:
            raise DownloadError("Could not upload to the server.", permanent=False) from exc
        with response:
            if response.status_code in _REDIRECT_STATUSES:
                raise DownloadError(
                    f"The upload URL answered {response.status_code}, a redirect.",
                    permanent=True,
                    status=response.status_code,
                )
            _raise_for_status(response)
            return response.status_code
    finally:
        _current_trusted.reset(token)
