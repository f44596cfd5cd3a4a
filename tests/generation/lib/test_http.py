"""generation.lib.http: SSRF rules, redirects, byte caps and error classification, against a real loopback server.

Nothing here leaves 127.0.0.1: names that should resolve elsewhere are answered by a patched getaddrinfo,
and refused addresses are refused before any connection is attempted.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

from generation.lib.http import (
    Download,
    DownloadError,
    UnsafeURLError,
    fetch,
    is_public_address,
    upload,
    validate_url,
)


def _png() -> bytes:
    out = BytesIO()
    Image.new("RGB", (8, 8), "green").save(out, "PNG")
    return out.getvalue()


PNG = _png()
BIG = 200_000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        query = parse_qs(urlsplit(self.path).query)
        self.server.seen.append((path, dict(self.headers)))
        if path == "/image.png":
            self._send(200, PNG, {"Content-Type": "image/png; charset=binary"})
        elif path == "/redirect":
            self._send(int(query.get("status", ["302"])[0]), headers={"Location": query["to"][0]})
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif path == "/no-location":
            self._send(302)
        elif path == "/big":
            self._send(200, b"x" * BIG, {"Content-Type": "application/octet-stream"})
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(BIG // 10_000):
                self.wfile.write(b"%x\r\n%s\r\n" % (10_000, b"x" * 10_000))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big-until-close":
            # No Content-Length and no chunking: the body ends when the connection does.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * BIG)
            self.close_connection = True
        elif path == "/claims-huge":
            # Declares 50 MB, sends 10 bytes, then stalls: only an early Content-Length check stops this fast.
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            time.sleep(3)
            self.close_connection = True
        elif path == "/slow":
            time.sleep(2)
            self._send(200, b"late")
        elif path == "/set-cookie":
            self._send(200, b"ok", {"Set-Cookie": "session=stolen; Path=/"})
        elif path == "/missing":
            self._send(404, b"not here")
        elif path == "/gone":
            self._send(410)
        elif path == "/forbidden":
            self._send(403)
        elif path == "/busy":
            self._send(503, b"busy", {"Retry-After": "7"})
        elif path == "/slow-down":
            when = datetime.now(UTC) + timedelta(seconds=120)
            self._send(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
        elif path == "/broken":
            self._send(500)
        else:
            self._send(404)

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((path, dict(self.headers)))
        self.server.uploaded.append(body)
        if path == "/upload":
            self._send(200)
        elif path == "/upload-redirect":
            self._send(307, headers={"Location": "/upload"})
        elif path == "/upload-busy":
            self._send(503, b"busy", {"Retry-After": "4"})
        elif path == "/upload-denied":
            self._send(403, b"signature expired")
        else:
            self._send(404)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, dict[str, str]]]
    uploaded: list[bytes]

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-body is what several tests do on purpose


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.seen = []
    httpd.uploaded = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def port(server: Server) -> int:
    server.seen.clear()
    server.uploaded.clear()
    return server.server_address[1]


@pytest.fixture
def base(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.DOWNLOAD_MAX_BYTES = 25 * 1024 * 1024


@pytest.fixture
def trusted(port: int) -> list[str]:
    """The loopback server, trusted as a provider's own host would be (fetch(..., trusted=trusted))."""
    return [f"127.0.0.1:{port}"]


@pytest.fixture
def fake_dns(monkeypatch):
    """Answer getaddrinfo for chosen names; every other name goes to the real resolver (loopback only here).

    Values are lists of addresses, or a list of such lists: one per successive lookup, the last repeating.
    """
    real = socket.getaddrinfo
    answers: dict[str, list] = {}
    lookups: dict[str, int] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, *args, **kwargs)
        plan = answers[name]
        sequence = plan if plan and isinstance(plan[0], list) else [plan]
        index = lookups.get(name, 0)
        lookups[name] = index + 1
        addresses = sequence[min(index, len(sequence) - 1)]
        result = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port))))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


class TestSchemesAndShapes:
    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("file:///etc/passwd", "Only http and https URLs can be fetched."),
            ("ftp://example.com/a.png", "Only http and https URLs can be fetched."),
            ("gopher://127.0.0.1:6379/_FLUSHALL", "Only http and https URLs can be fetched."),
            ("javascript:alert(1)", "Only http and https URLs can be fetched."),
            ("//example.com/a.png", "Only http and https URLs can be fetched."),
            ("http://user:pw@example.com/a.png", "URLs with a user name or password cannot be fetched."),
            ("http://example.com@127.0.0.1/", "URLs with a user name or password cannot be fetched."),
            ("http:///a.png", "That URL has no host name."),
            ("http://example.com:99999/", "That URL's port is not valid."),
            ("http://example.com\\@127.0.0.1/", "That URL contains spaces, backslashes or control characters."),
            ("http://exa mple.com/", "That URL contains spaces, backslashes or control characters."),
            ("http://example.com/\r\nHost: evil", "That URL contains spaces, backslashes or control characters."),
        ],
    )
    def test_it_refuses_with_a_clear_message(self, url, message):
        with pytest.raises(UnsafeURLError) as refused:
            validate_url(url)
        assert str(refused.value) == message
        with pytest.raises(UnsafeURLError):
            fetch(url)

    def test_unsafe_url_error_is_a_value_error_for_forms(self):
        assert issubclass(UnsafeURLError, ValueError)


class TestAddresses:
    @pytest.mark.parametrize(
        "address",
        [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",  # noqa: S104 - an address under test, not a bind
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ],
    )
    def test_it_calls_private_local_and_special_addresses_not_public(self, address):
        assert not is_public_address(ipaddress.ip_address(address))

    @pytest.mark.parametrize(
        "address", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
    )
    def test_it_calls_internet_addresses_public(self, address):
        assert is_public_address(ipaddress.ip_address(address))

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:{port}/image.png",
            "http://localhost:{port}/image.png",
            "http://[::1]:{port}/image.png",
            "http://[::ffff:127.0.0.1]:{port}/image.png",
            "http://0.0.0.0:{port}/image.png",
            "http://2130706433:{port}/image.png",  # 127.0.0.1 as one decimal number
            "http://127.1:{port}/image.png",
            "http://169.254.169.254/latest/meta-data/",
        ],
    )
    def test_it_refuses_loopback_and_link_local_in_every_spelling(self, server, port, url):
        url = url.format(port=port)
        with pytest.raises(UnsafeURLError, match=r"^That address is private or local and cannot be fetched\.$"):
            fetch(url)
        assert server.seen == []

    def test_it_refuses_a_name_that_resolves_to_a_private_address(self, fake_dns):
        fake_dns["images.internal.example"] = ["10.0.0.5"]

        with pytest.raises(UnsafeURLError, match="private or local"):
            validate_url("https://images.internal.example/a.png")
        with pytest.raises(UnsafeURLError, match="private or local"):
            fetch("https://images.internal.example/a.png")

    def test_it_refuses_a_name_with_any_private_address_among_public_ones(self, fake_dns):
        fake_dns["mixed.example"] = ["93.184.216.34", "2606:2800:220:1::1", "127.0.0.1"]

        with pytest.raises(UnsafeURLError):
            validate_url("http://mixed.example/")

    def test_it_accepts_a_name_that_resolves_only_to_public_addresses(self, fake_dns):
        fake_dns["cdn.example"] = ["93.184.216.34", "2606:2800:220:1::1"]

        validate_url("https://cdn.example/a.png")  # no exception

    def test_it_reports_an_unknown_host_as_not_found(self, fake_dns, monkeypatch):
        def not_found(*args, **kwargs):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", not_found)

        with pytest.raises(UnsafeURLError, match=r"^That address could not be found\.$"):
            validate_url("https://nowhere.invalid/")
        with pytest.raises(DownloadError) as failed:
            fetch("https://nowhere.invalid/")
        assert failed.value.permanent is True

    def test_it_checks_the_address_actually_connected_to_against_dns_rebinding(self, server, port, fake_dns):
        # First lookup (our pre-check) says public; the second (urllib3's, when it connects) says loopback.
        fake_dns["rebind.example"] = [["93.184.216.34"], ["127.0.0.1"]]

        with pytest.raises(UnsafeURLError, match="private or local"):
            fetch(f"http://rebind.example:{port}/image.png")

        assert server.seen == [], "the request must not have been sent"

    def test_it_checks_the_connected_address_for_https_too(self, fake_dns):
        # Fails before any TLS: the listener never even has to speak it.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            fake_dns["rebind-tls.example"] = [["93.184.216.34"], ["127.0.0.1"]]

            with pytest.raises(UnsafeURLError, match="private or local"):
                fetch(f"https://rebind-tls.example:{listener.getsockname()[1]}/image.png", timeout=(1.0, 1.0))


class TestTrustedHosts:
    def test_it_fetches_from_a_trusted_host_and_port(self, trusted, base):
        download = fetch(f"{base}/image.png", trusted=trusted)

        assert isinstance(download, Download)
        assert download.data == PNG
        assert download.content_type == "image/png"
        assert download.url == f"{base}/image.png"
        validate_url(f"{base}/image.png", trusted=trusted)

    def test_a_bare_trusted_host_trusts_every_port(self, base):
        assert fetch(f"{base}/image.png", trusted=["127.0.0.1"]).data == PNG

    def test_trust_for_another_port_does_not_apply(self, server, base):
        with pytest.raises(UnsafeURLError):
            fetch(f"{base}/image.png", trusted=["127.0.0.1:1", "localhost"])
        assert server.seen == []

    def test_nothing_is_trusted_unless_the_caller_says_so(self, settings, server, base, port):
        # The setting lists staff hosts for the providers to claim (HttpApi.fetch_trusted_hosts); it is not a
        # blanket pass for every download, such as a user's reference URL.
        settings.TRUSTED_FETCH_HOSTS = [f"127.0.0.1:{port}"]
        with pytest.raises(UnsafeURLError):
            validate_url(f"{base}/image.png")
        with pytest.raises(UnsafeURLError):
            fetch(f"{base}/image.png")
        assert server.seen == []

    @pytest.mark.parametrize(
        "target",
        [
            "http://127.0.0.2:{port}/image.png",
            "http://localhost:{port}/image.png",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://[::ffff:127.0.0.1]:{port}/image.png",
            "file:///etc/passwd",
        ],
    )
    def test_a_redirect_from_a_trusted_host_to_an_untrusted_one_is_refused(self, trusted, server, base, port, target):
        target = target.format(port=port)

        with pytest.raises(UnsafeURLError):
            fetch(f"{base}/redirect?to={quote(target, safe='')}", trusted=trusted)

        assert [path for path, _ in server.seen] == ["/redirect"]

    @pytest.mark.parametrize(
        "target",
        [
            "http://127.0.0.1:{other}/image.png",  # the same machine, another service
            "http://localhost:{port}/image.png",  # the same server under another trusted name
            "http://169.254.169.254/latest/meta-data/",
        ],
    )
    def test_trust_does_not_follow_a_redirect_off_the_trusted_origin(self, server, base, port, target):
        # Every one of these is in the trusted list, yet only the URL the provider gave is trusted:
        # each further hop is judged by the public-address rules.
        with socket.socket() as other_service:
            other_service.bind(("127.0.0.1", 0))
            other_service.listen()
            other = other_service.getsockname()[1]
            target = target.format(port=port, other=other)
            trusted = ["127.0.0.1", f"localhost:{port}", "169.254.169.254"]

            with pytest.raises(UnsafeURLError, match="private or local"):
                fetch(f"{base}/redirect?to={quote(target, safe='')}", trusted=trusted)

            other_service.settimeout(0.05)
            with pytest.raises(TimeoutError):
                other_service.accept()  # nothing ever connected
        assert [path for path, _ in server.seen] == ["/redirect"]

    def test_the_connection_time_check_uses_the_hops_own_trust(self, server, base, port, fake_dns):
        # A redirect to a name that passes the pre-check as public but connects to loopback: the
        # trusted first hop must not lend its trust to this connection.
        fake_dns["rebind.example"] = [["93.184.216.34"], ["127.0.0.1"]]
        target = quote(f"http://rebind.example:{port}/image.png", safe="")

        with pytest.raises(UnsafeURLError, match="private or local"):
            fetch(f"{base}/redirect?to={target}", trusted=[f"127.0.0.1:{port}"])

        assert [path for path, _ in server.seen] == ["/redirect"]


class TestRedirects:
    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_it_follows_redirects_and_reports_the_final_url(self, trusted, base, status):
        download = fetch(f"{base}/redirect?status={status}&to={quote('/image.png', safe='')}", trusted=trusted)

        assert download.data == PNG
        assert download.url == f"{base}/image.png"

    def test_it_stops_after_max_redirects(self, trusted, server, base):
        with pytest.raises(DownloadError, match="Too many redirects") as failed:
            fetch(f"{base}/loop", max_redirects=2, trusted=trusted)

        assert failed.value.permanent is True
        assert len(server.seen) == 3  # the first request and two redirects

    def test_a_redirect_without_location_is_a_permanent_error(self, trusted, base):
        with pytest.raises(DownloadError) as failed:
            fetch(f"{base}/no-location", trusted=trusted)
        assert failed.value.permanent is True

    def test_caller_headers_do_not_follow_a_redirect_to_another_origin(self, server, port, base, monkeypatch):
        # Redirects to another origin only succeed to public hosts: play one with loopback judged public.
        monkeypatch.setattr("generation.lib.http.is_public_address", lambda ip: True)
        elsewhere = quote(f"http://localhost:{port}/image.png", safe="")

        fetch(f"{base}/redirect?to={elsewhere}", headers={"X-Caller-Token": "abc"})

        (first_path, first_headers), (second_path, second_headers) = server.seen
        assert (first_path, first_headers.get("X-Caller-Token")) == ("/redirect", "abc")
        assert second_path == "/image.png" and "X-Caller-Token" not in second_headers

    def test_caller_headers_follow_a_redirect_on_the_same_origin(self, trusted, server, base):
        fetch(f"{base}/redirect?to=%2Fimage.png", headers={"X-Caller-Token": "abc"}, trusted=trusted)

        assert [headers.get("X-Caller-Token") for _, headers in server.seen] == ["abc", "abc"]


class TestByteCap:
    @pytest.mark.parametrize("path", ["/big", "/big-chunked", "/big-until-close"])
    def test_it_refuses_a_body_over_the_cap(self, trusted, base, path):
        with pytest.raises(DownloadError, match="larger than the") as failed:
            fetch(f"{base}{path}", max_bytes=BIG - 1, trusted=trusted)
        assert failed.value.permanent is True

    @pytest.mark.parametrize("path", ["/big", "/big-chunked", "/big-until-close"])
    def test_it_accepts_a_body_exactly_at_the_cap(self, trusted, base, path):
        assert len(fetch(f"{base}{path}", max_bytes=BIG, trusted=trusted).data) == BIG

    @pytest.mark.parametrize("path", ["/big", "/big-chunked"])
    def test_it_streams_a_body_into_a_file_under_the_same_cap(self, trusted, base, path, tmp_path):
        with open(tmp_path / "body", "w+b") as spool:
            download = fetch(f"{base}{path}", max_bytes=BIG, trusted=trusted, into=spool)
            assert (download.data, download.size, spool.tell()) == (b"", BIG, BIG)
        with open(tmp_path / "over", "w+b") as spool, pytest.raises(DownloadError, match="larger than the"):
            fetch(f"{base}{path}", max_bytes=BIG - 1, trusted=trusted, into=spool)

    def test_it_refuses_on_content_length_without_waiting_for_the_body(self, trusted, base):
        started = time.monotonic()

        with pytest.raises(DownloadError, match=r"larger than the 25 MB limit") as failed:
            fetch(f"{base}/claims-huge", timeout=(1.0, 2.0), trusted=trusted)

        assert failed.value.permanent is True
        assert time.monotonic() - started < 1.5, "it waited for the body instead of trusting Content-Length"

    def test_the_cap_defaults_to_download_max_bytes(self, settings, trusted, base):
        settings.DOWNLOAD_MAX_BYTES = 1000

        with pytest.raises(DownloadError, match="larger than"):
            fetch(f"{base}/big", trusted=trusted)


class TestErrors:
    @pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/gone", 410), ("/forbidden", 403)])
    def test_client_errors_are_permanent(self, trusted, base, path, status):
        with pytest.raises(DownloadError) as failed:
            fetch(f"{base}{path}", trusted=trusted)

        assert (failed.value.permanent, failed.value.status, failed.value.retry_after) == (True, status, None)
        assert str(status) in str(failed.value)

    def test_503_is_retryable_with_retry_after_seconds(self, trusted, base):
        with pytest.raises(DownloadError) as failed:
            fetch(f"{base}/busy", trusted=trusted)

        assert (failed.value.permanent, failed.value.status, failed.value.retry_after) == (False, 503, 7.0)

    def test_429_is_retryable_with_retry_after_as_a_date(self, trusted, base):
        with pytest.raises(DownloadError) as failed:
            fetch(f"{base}/slow-down", trusted=trusted)

        assert failed.value.permanent is False
        assert 100 < failed.value.retry_after <= 120

    def test_500_without_retry_after_is_retryable(self, trusted, base):
        with pytest.raises(DownloadError) as failed:
            fetch(f"{base}/broken", trusted=trusted)

        assert (failed.value.permanent, failed.value.retry_after) == (False, None)

    def test_a_read_timeout_is_retryable(self, trusted, base):
        with pytest.raises(DownloadError, match="in time") as failed:
            fetch(f"{base}/slow", timeout=(1.0, 0.2), trusted=trusted)

        assert failed.value.permanent is False

    def test_a_refused_connection_is_retryable(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        with pytest.raises(DownloadError) as failed:
            fetch(f"http://127.0.0.1:{closed_port}/image.png", timeout=(1.0, 1.0), trusted=[f"127.0.0.1:{closed_port}"])

        assert failed.value.permanent is False


class TestSessionHygiene:
    def test_cookies_from_one_fetch_are_never_sent_on_the_next(self, trusted, server, base):
        fetch(f"{base}/set-cookie", trusted=trusted)
        fetch(f"{base}/image.png", trusted=trusted)

        assert all("Cookie" not in headers for _, headers in server.seen)

    def test_it_asks_for_an_uncompressed_body(self, trusted, server, base):
        fetch(f"{base}/image.png", trusted=trusted)

        (_, headers), *_ = server.seen
        assert headers["Accept-Encoding"] == "identity"


class TestUpload:
    """upload(): a signed upload URL gets the bytes by PUT, under the same address rules as fetch."""

    def test_it_puts_the_bytes_with_their_content_type_and_no_credentials(self, server, base, trusted):
        data = b"PK\x03\x04" + b"z" * 5000
        assert (
            upload(f"{base}/upload?X-Goog-Signature=abc", data, content_type="application/zip", trusted=trusted) == 200
        )
        assert server.uploaded == [data]
        path, headers = server.seen[-1]
        assert path == "/upload"
        assert headers["Content-Type"] == "application/zip"
        assert headers["Content-Length"] == str(len(data))
        assert "Authorization" not in headers and "Cookie" not in headers

    def test_it_streams_a_file(self, server, base, trusted, tmp_path):
        archive = tmp_path / "dataset.zip"
        archive.write_bytes(b"x" * 70_000)
        with archive.open("rb") as handle:
            upload(f"{base}/upload", handle, content_type="application/zip", trusted=trusted)
        assert server.uploaded == [b"x" * 70_000]

    def test_a_loopback_url_is_refused_unless_its_host_is_trusted(self, server, base):
        with pytest.raises(UnsafeURLError):
            upload(f"{base}/upload", b"data", content_type="application/zip")
        assert server.uploaded == []

    def test_a_redirect_is_not_followed(self, server, base, trusted):
        with pytest.raises(DownloadError) as caught:
            upload(f"{base}/upload-redirect", b"data", content_type="application/zip", trusted=trusted)
        assert caught.value.permanent and caught.value.status == 307
        assert [path for path, _ in server.seen] == ["/upload-redirect"]

    def test_a_busy_server_is_retryable_and_a_refusal_is_not(self, base, trusted):
        with pytest.raises(DownloadError) as busy:
            upload(f"{base}/upload-busy", b"data", content_type="application/zip", trusted=trusted)
        assert not busy.value.permanent and busy.value.retry_after == 4
        with pytest.raises(DownloadError) as denied:
            upload(f"{base}/upload-denied", b"data", content_type="application/zip", trusted=trusted)
        assert denied.value.permanent and denied.value.status == 403
