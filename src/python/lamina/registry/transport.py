"""HTTP to one registry: scheme and TLS choice, proxies, timeouts, Basic/Bearer auth, redirects and bounded retries."""
from __future__ import annotations

import http.client
import io
import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping, Optional, Union

import urllib3
import urllib3.exceptions

from lamina.registry.auth import (
    Credentials,
    config_path,
    find_credentials,
    load_docker_config,
    parse_challenges,
    parse_token_response,
    token_request,
)
from lamina.errors import shown
from lamina.registry.errors import AuthError, NotFound, RegistryError, RegistryUnreachable
from lamina.registry.proxy import ProxyConfig, ProxyURL
from lamina.registry.redirects import follow, origin, shown_target
from lamina.registry.reference import is_loopback
from lamina.registry.retry import NO_RETRY, Attempts, RetryPolicy, is_transient_status, parse_retry_after
from lamina.registry.tls import certs_d_roots, host_certs, ssl_context

# Built on urllib3 rather than a registry library (client.py says why). Every request has a timeout;
# only connection failures, timeouts, 429 and 5xx are retried, and a request whose body is a stream is
# never re-sent here: the blob upload that owns the stream restarts from a fresh one instead.

USER_AGENT = "lamina"
SMALL_BODY_LIMIT = 8 << 20  # manifests, configs, error and token bodies larger than this are refused
_REDIRECTS = (301, 302, 303, 307, 308)
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})([^'\"]*)")
_TOKEN_MARGIN_S = 10.0

Body = Union[None, bytes, BinaryIO, io.RawIOBase]


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to registries; the CLI builds it from flags and the environment."""

    insecure: tuple[str, ...] = ()  # HOST or HOST:PORT allowed plain HTTP (loopback always is)
    ca_bundle: Optional[str] = None  # PEM file of CAs to trust besides the system's
    docker_config: str = ""  # path of the Docker CLI config.json with credentials ("" = none)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = RetryPolicy()
    chunk_size: int = 16 << 20  # blobs larger than this are uploaded in PATCH chunks of this size
    require_pinned: bool = False  # refuse tag references (a tag can move; a digest cannot)
    proxies: ProxyConfig = ProxyConfig()  # none: every connection is direct
    certs_d: tuple[str, ...] = ()  # Docker certs.d roots: <root>/<host[:port]>/*.crt, *.cert + *.key
    helper_path: Optional[str] = None  # where credential helpers are looked up (None: this process's PATH)
    warn: Optional[Callable[[str], None]] = field(default=None, compare=False, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **overrides: Any) -> "RegistryOptions":
        """Options from the environment: credentials from the Docker config it names (DOCKER_CONFIG, HOME, or
        the file LAMINA_CREDENTIALS_FROM names, which takes precedence when it can be read),
        proxies (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, either case) and certs.d roots (LAMINA_CERTS_D, else
        /etc/docker/certs.d and $XDG_CONFIG_HOME/docker/certs.d or ~/.config/docker/certs.d)."""
        read = {"docker_config": config_path(environ), "proxies": ProxyConfig.from_environ(environ),
                "certs_d": certs_d_roots(environ)}
        # A cached process finds them in the file a per-session step wrote (see registry/where.py).
        from lamina.registry.where import CREDENTIALS_FROM, read_locations

        written = read_locations(environ[CREDENTIALS_FROM]) if environ.get(CREDENTIALS_FROM) else None
        if written is not None:
            read["docker_config"], read["certs_d"], helper_path = written
            read["helper_path"] = helper_path or None
        return cls(**{**read, **overrides})


class TransientError(RegistryError):
    """A failure worth retrying (connection broken, timeout, 429, 5xx); `retry_after` if the server said."""

    def __init__(self, message: str, retry_after: Optional[float] = None, network: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.network = network  # the connection failed (rather than the registry answering 429/5xx)


TRANSIENT_EXCEPTIONS = (
    urllib3.exceptions.TimeoutError,  # connect and read timeouts, refused connections (NewConnectionError)
    urllib3.exceptions.ProtocolError,  # reset, aborted, remote end closed without a response
    urllib3.exceptions.IncompleteRead,
    http.client.HTTPException,
    ConnectionError,
)


def _is_cert_error(e: BaseException) -> bool:
    seen: Optional[BaseException] = e
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        nested = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        seen = seen.__cause__ or seen.__context__ or (nested[0] if nested else None)
    return "CERTIFICATE_VERIFY_FAILED" in str(e)


def reason(e: BaseException) -> str:
    """A short one-line cause of a network exception (errno text rather than urllib3's object reprs)."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        if isinstance(seen, urllib3.exceptions.ReadTimeoutError):
            return "read timed out"
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(e).split(": ", 1)[-1] if ": " in str(e) else str(e)
    if isinstance(e, urllib3.exceptions.ProtocolError) and e.args and len(e.args) > 1:
        text = f"{e.args[0]} {reason(e.args[1]) if isinstance(e.args[1], BaseException) else e.args[1]}"
    return " ".join((text or type(e).__name__).split())[:200]


def _tunnel_failure(e: BaseException) -> Optional[tuple[int, str]]:
    """(status, reason) when a proxy answered CONNECT with an error, as urllib3 reports it in some wrapping."""
    found = _TUNNEL_FAILED.search(repr(e)) or _TUNNEL_FAILED.search(str(e))
    return (int(found.group(1)), " ".join(found.group(2).split())) if found else None


def _proxy_reason(e: BaseException) -> str:
    """The cause inside urllib3's ProxyError('Unable to connect to proxy', cause)."""
    nested = [a for a in e.args if isinstance(a, BaseException)]
    return reason(nested[0]) if nested else reason(e)


@dataclass
class Reply:
    """A response: status, headers and (unless streamed) the body read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    raw: Optional[urllib3.BaseHTTPResponse] = field(default=None, repr=False)

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""


def read_limited(resp: urllib3.BaseHTTPResponse, limit: int, what: str) -> bytes:
    parts, total = [], 0
    try:
        while True:
            data = resp.read(1 << 16, decode_content=False)
            if not data:
                break
            total += len(data)
            if total > limit:
                raise RegistryError(f"{what}: the registry sent more than {limit} bytes; refusing it")
            parts.append(data)
    except TRANSIENT_EXCEPTIONS as e:
        raise TransientError(f"{what}: connection broke while reading the answer ({reason(e)})", network=True) from e
    finally:
        resp.release_conn()
    return b"".join(parts)


def error_codes(body: bytes) -> str:
    """'CODE: message; ...' from a registry's JSON error body, '' when there is none."""
    import json

    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return ""
    parts = []
    for e in errors if isinstance(errors, list) else []:
        if isinstance(e, dict):
            parts.append(f"{e.get('code', '')}: {e.get('message', '')}".strip(": "))
    return " ".join("; ".join(parts).split())[:300]  # one line, whatever the registry wrote


class Transport:
    """Requests to one registry host, authenticated and retried; create one per host and reuse it."""

    def __init__(self, host: str, options: RegistryOptions, pool: Optional[urllib3.PoolManager] = None) -> None:
        self.host = host
        self.options = options
        self.plain_allowed = is_loopback(host) or host in options.insecure or host.rsplit(":", 1)[0] in options.insecure
        self._probed = not self.plain_allowed  # others are HTTPS, no question
        self._scheme = "https"
        self._injected = pool  # one pool for every URL (tests, the fuzz harness); else one per proxy
        self._pools: dict[Optional[ProxyURL], urllib3.PoolManager] = {}
        self._context: Optional[ssl.SSLContext] = None
        self._timeout = urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout)
        self._creds: Optional[Credentials] = None
        self._creds_loaded = False
        self._basic: Optional[str] = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    @property
    def scheme(self) -> str:
        """'https', or 'http' for a loopback or --insecure host that does not speak TLS (as Docker decides)."""
        if not self._probed:
            self._probed = True
            self._scheme = "http" if self._plain_only() else "https"
        return self._scheme

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _plain_only(self) -> bool:
        """Try TLS once: False if the host answers over HTTPS (or presents a certificate lamina cannot verify, so
        the error says so), True if it does not speak TLS at all."""
        url = f"https://{self.host}/v2/"
        pool, proxy = self._route(url)
        try:
            resp = pool.request("GET", url, preload_content=False, redirect=False,
                                retries=False, timeout=self._timeout, headers={"User-Agent": USER_AGENT})
        except urllib3.exceptions.SSLError as e:
            return not _is_cert_error(e)
        except (urllib3.exceptions.ProxyError, *TRANSIENT_EXCEPTIONS) as e:
            tunnel = _tunnel_failure(e)
            if proxy is not None and tunnel:
                # The proxy refused the tunnel (credentials, policy): never a reason to drop TLS; the
                # first request over HTTPS says what the proxy answered.
                return False
            return True  # no TLS there: plain HTTP
        resp.drain_conn()
        resp.release_conn()
        return False

    # -- credentials and challenges ---------------------------------------------------------------

    def credentials(self) -> Optional[Credentials]:
        if not self._creds_loaded:
            config = load_docker_config(self.options.docker_config) if self.options.docker_config else None
            self._creds = find_credentials(config, self.host, self.options.helper_path) if config else None
            self._creds_loaded = True
        return self._creds

    def _auth_header(self, scopes: tuple[str, ...]) -> Optional[str]:
        token = self._tokens.get(scopes)
        if token and token[1] > time.monotonic():
            return "Bearer " + token[0]
        return self._basic

    def _refused(self, by: str, status: int) -> AuthError:
        """The error for credentials refused (or missing), naming whose and where they came from."""
        creds = self.credentials()
        if creds is None:
            where = self.options.docker_config or "no Docker config file"
            return AuthError(f"{by} requires credentials (HTTP {status}) and {where} has none for {self.host}; "
                             f"run `docker login {self.host}`")
        user = creds.username or ("a registry token" if creds.registry_token and not creds.identity_token
                                  else "an identity token")
        return AuthError(f"{by} refused the credentials of {user} from {creds.origin} (HTTP {status}); "
                         f"check them or run `docker login {self.host}`")

    def _authenticate(self, challenge_header: str, scopes: tuple[str, ...], what: str) -> None:
        challenges = parse_challenges(challenge_header)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        creds = self.credentials()
        if creds is not None and creds.registry_token and (bearer is not None or basic is not None):
            # config.json's "registrytoken": a bearer token for this registry, sent as it is, as the
            # Docker CLI sends it (no token endpoint is asked).
            self._tokens[scopes] = (creds.registry_token, float("inf"))
            return
        if bearer is not None:
            method, url, headers, body = token_request(bearer, scopes, creds)
            realm = shown(str(bearer.get("realm"))[:200])
            try:  # the registry's challenge names it: anything at all
                parsed = urllib.parse.urlsplit(url)
                urllib3.util.parse_url(url)
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    raise ValueError(url)
            except ValueError:  # urllib3's LocationParseError is one too
                raise AuthError(f"{what}: the registry's Bearer challenge names a token endpoint {realm}, which is "
                                "not an http(s) URL") from None
            endpoint = shown(parsed.netloc)  # from the registry's challenge: printed as it is only if printable
            if parsed.scheme != "https" and not (is_loopback(parsed.netloc) or parsed.netloc in self.options.insecure):
                raise AuthError(f"{what}: token endpoint {shown(str(bearer.get('realm')))} is plain HTTP on a non-loopback host; "
                                f"refusing to send credentials there (list it with --insecure to allow)")
            reply = self._exchange(method, url, headers, body, NO_RETRY if body else self.options.retry,
                                   f"token endpoint {endpoint}", SMALL_BODY_LIMIT)
            if reply.status in (401, 403):
                raise self._refused(f"{what}: the token endpoint {endpoint}", reply.status)
            if reply.status != 200:
                raise RegistryError(f"{what}: the token endpoint {endpoint} answered HTTP {reply.status} "
                                    f"{error_codes(reply.body)}".rstrip())
            token, expires = parse_token_response(reply.body, bearer.get("realm"))
            self._tokens[scopes] = (token, time.monotonic() + max((expires or 60.0) - _TOKEN_MARGIN_S, 1.0))
            return
        if basic is not None:
            if creds is None or not creds.basic:
                raise self._refused(f"{what}: {self.host}", 401)
            self._basic = creds.basic
            return
        raise AuthError(f"{what}: {self.host} answered 401 with no Basic or Bearer challenge "
                        f"({challenge_header[:100]!r}); lamina cannot authenticate there")

    # -- connections -----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        """System roots + --ca-bundle + certs.d/<host>'s CAs and client certificate, for every URL of this
        registry (its redirects and token endpoint too, as Docker uses one TLS configuration per registry)."""
        if self._context is None:
            self._context = ssl_context(self.options.ca_bundle, host_certs(self.options.certs_d, self.host))
        return self._context

    def _route(self, url: str) -> tuple[urllib3.PoolManager, Optional[ProxyURL]]:
        """The pool a request to `url` goes through and the proxy it uses (None: direct)."""
        if self._injected is not None:
            return self._injected, None
        proxy = self.options.proxies.proxy_for(url)
        pool = self._pools.get(proxy)
        if pool is None:
            if proxy is None:
                pool = urllib3.PoolManager(num_pools=8, maxsize=4, ssl_context=self._ssl_context())
            else:  # CONNECT tunnels for https URLs, absolute-URI forwarding for http ones
                headers = urllib3.util.make_headers(proxy_basic_auth=proxy.basic_auth) if proxy.basic_auth else None
                tls_proxy = ssl_context(self.options.ca_bundle) if proxy.url.startswith("https:") else None
                pool = urllib3.ProxyManager(proxy.url, num_pools=8, maxsize=4, proxy_headers=headers,
                                            ssl_context=self._ssl_context(), proxy_ssl_context=tls_proxy)
            self._pools[proxy] = pool
        return pool, proxy

    def _proxy_auth_error(self, proxy: ProxyURL, what: str) -> AuthError:
        fix = (f"check the USER:PASSWORD in {proxy.var}" if proxy.basic_auth else
               f"put them in {proxy.var} as http://USER:PASSWORD@HOST:PORT (percent-encoded)")
        return AuthError(f"{what}: proxy {proxy.url} ({proxy.var}) refused to forward to {self.host} without "
                         f"valid proxy credentials (HTTP 407); {fix}")

    # -- sending ---------------------------------------------------------------------------------

    def url(self, path_or_url: str) -> str:
        return urllib.parse.urljoin(self.base + "/", path_or_url)

    def _send(self, method: str, url: str, headers: Mapping[str, str], body: Body,
              what: str) -> urllib3.BaseHTTPResponse:
        """One HTTP exchange; TransientError for failures worth retrying, RegistryUnreachable for others."""
        pool, proxy = self._route(url)
        netloc = urllib.parse.urlsplit(url).netloc
        own = netloc == self.host
        netloc = shown(netloc)  # a redirect's, from the registry: escaped unless printable
        server = f"registry {self.host} at {self.base}" if own else f"{shown_target(url)} (for registry {self.host})"
        via = f" through proxy {proxy.url}" if proxy else ""
        try:
            return pool.request(method, url, body=body, headers=dict(headers), preload_content=False,
                                redirect=False, retries=False, timeout=self._timeout)
        except urllib3.exceptions.NameResolutionError as e:
            name = f"registry host {self.host}" if own else f"host {netloc} (for registry {self.host})"
            raise RegistryUnreachable(f"{what}: cannot resolve {name}; check the name") from e
        except urllib3.exceptions.SSLError as e:
            plain = "" if self.plain_allowed else f", for a plain-HTTP registry pass --insecure {self.host}"
            tls_with = self.host if own else f"{netloc} (for registry {self.host})"
            raise RegistryUnreachable(f"{what}: TLS with {tls_with}{via} failed ({reason(e)}); "
                                      f"for a private CA pass --ca-bundle PATH{plain}") from e
        except (urllib3.exceptions.ProxyError, *TRANSIENT_EXCEPTIONS) as e:
            tunnel = _tunnel_failure(e) if proxy is not None else None
            if proxy is not None and tunnel is not None:
                status, text = tunnel
                if status == 407:
                    raise self._proxy_auth_error(proxy, what) from e
                message = (f"{what}: proxy {proxy.url} ({proxy.var}) would not connect to {netloc} "
                           f"(HTTP {status} {text}".rstrip() + f"); check the proxy, or list {netloc} in NO_PROXY")
                if is_transient_status(status):
                    raise TransientError(message, network=True) from e
                raise RegistryUnreachable(message) from e
            if proxy is not None and isinstance(e, urllib3.exceptions.ProxyError):
                raise self._unreachable_proxy(e, proxy, server, what) from e
            raise TransientError(f"{what}: cannot reach {server}{via} ({reason(e)}); "
                                 "check that it is running and that HOST:PORT is right", network=True) from e

    @staticmethod
    def _unreachable_proxy(e: BaseException, proxy: ProxyURL, server: str, what: str) -> RegistryError:
        message = (f"{what}: cannot reach proxy {proxy.url} ({proxy.var}) for {server} ({_proxy_reason(e)}); "
                   "check the proxy, or list the host in NO_PROXY")
        if _is_cert_error(e):  # an https proxy whose certificate does not verify: no retry helps
            return RegistryUnreachable(message.replace("check the proxy", "for a private CA pass --ca-bundle PATH"))
        return TransientError(message, network=True)

    def _exchange(self, method: str, url: str, headers: Mapping[str, str], body: Optional[bytes],
                  policy: RetryPolicy, what: str, limit: int) -> Reply:
        """A request with a small body and answer, retried on transient failures (used for tokens)."""
        attempts = Attempts(policy)
        while True:
            try:
                resp = self._send(method, url, {"User-Agent": USER_AGENT, **headers}, body, what)
                if is_transient_status(resp.status):
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                    resp.drain_conn()
                    raise TransientError(f"{what}: HTTP {resp.status}", retry_after)
                return Reply(resp.status, resp.headers, read_limited(resp, limit, what))
            except TransientError as e:
                if not attempts.failed(e.retry_after):
                    raise final_error(e, attempts.failures) from e

    def request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...], what: str,
                headers: Optional[Mapping[str, str]] = None, body: Body = None, stream: bool = False,
                limit: int = SMALL_BODY_LIMIT, retry: bool = True) -> Reply:
        """Send a request, authenticating on 401, following redirects of GET/HEAD and retrying transient failures.

        A streamed `body` (a file object) is sent once, and so is any request with `retry=False`: their transient
        failures raise TransientError for the caller to handle (restart an upload from a fresh stream).
        With `stream`, the reply's `raw` is the open response (the caller releases it).
        """
        resendable = not hasattr(body, "read")
        retried = resendable and retry
        attempts = Attempts(self.options.retry if retried else NO_RETRY)
        url = self.url(path_or_url)
        authenticated = False
        redirects = 0
        while True:
            # credentials go only to the registry's own origin (scheme, host and port), never where it redirects
            same_host = origin(url) == origin(self.base)
            hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
            auth = self._auth_header(scopes) if same_host else None
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = self._send(method, url, hdrs, body, what)
                proxy = self._route(url)[1]
                if resp.status == 401 and same_host:
                    challenge = resp.headers.get("WWW-Authenticate") or ""
                    resp.drain_conn()
                    if authenticated:
                        raise self._refused(f"{what}: {self.host}", 401)
                    if not resendable:  # a token expired mid-upload: the upload restarts and authenticates first
                        raise TransientError(f"{what}: {self.host} asked to authenticate again mid-upload")
                    self._authenticate(challenge, scopes, what)
                    authenticated = True
                    continue
                if resp.status == 407 and proxy is not None:  # a forwarding proxy's answer, for http URLs
                    resp.drain_conn()
                    raise self._proxy_auth_error(proxy, what)
                if resp.status in _REDIRECTS and method in ("GET", "HEAD") and resp.headers.get("Location"):
                    location = resp.headers["Location"]
                    resp.drain_conn()
                    redirects += 1
                    url = follow(url, location, self.host, what, redirects)
                    continue
                if is_transient_status(resp.status):
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                    text = error_codes(read_limited(resp, SMALL_BODY_LIMIT, what)) if method != "HEAD" else ""
                    if method == "HEAD":
                        resp.drain_conn()
                    raise TransientError(f"{what}: {self.host} answered HTTP {resp.status} {text}".rstrip(), retry_after)
                if stream and 200 <= resp.status < 300:
                    return Reply(resp.status, resp.headers, raw=resp)
                if method == "HEAD":
                    resp.drain_conn()
                    return Reply(resp.status, resp.headers)
                return Reply(resp.status, resp.headers, read_limited(resp, limit, what))
            except TransientError as e:
                if not attempts.failed(e.retry_after):
                    if not retried:
                        raise
                    raise final_error(e, attempts.failures) from e


def final_error(e: TransientError, failures: int) -> RegistryError:
    """The error to report once retries are used up: RegistryUnreachable for connection trouble."""
    message = f"{e} (gave up after {failures} attempt{'s' if failures != 1 else ''})"
    if e.network:
        return RegistryUnreachable(message)
    return RegistryError(message)


def fail(reply: Reply, what: str, host: str) -> RegistryError:
    """The error for an unexpected final status."""
    codes = error_codes(reply.body)
    detail = f" ({codes})" if codes else ""
    if reply.status == 404:
        return NotFound(f"{what}: not found on {host}{detail}")
    if reply.status == 403:
        return AuthError(f"{what}: {host} denied access (HTTP 403){detail}; check the account's permissions")
    return RegistryError(f"{what}: {host} answered HTTP {reply.status}{detail}")
