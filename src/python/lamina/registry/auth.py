"""Registry credentials from the Docker config (auths, credHelpers, credsStore) and WWW-Authenticate challenges."""
from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping, Optional

from lamina.errors import shown
from lamina.registry.errors import AuthError
from lamina.registry.reference import DOCKER_HUB, DOCKER_HUB_API

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT_S = 60.0
_TOKEN_USERNAME = "<token>"  # what credential helpers return as Username for an identity token


@dataclass(frozen=True)
class Credentials:
    """What to authenticate with; secrets are kept out of repr()."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # an OAuth2 refresh token (`docker login` to some registries)
    registry_token: str = field(default="", repr=False)  # a bearer token to send as is
    origin: str = ""  # where they came from, for error messages: "config.json auths", "docker-credential-pass"

    @property
    def basic(self) -> Optional[str]:
        """The Basic Authorization header value, when there is a username and password."""
        if not self.username or not self.password:
            return None
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class DockerConfig:
    """The registry part of a Docker CLI config.json."""

    path: str  # the file read ("" when none exists)
    auths: tuple[tuple[str, Credentials], ...] = ()  # (normalised registry host, credentials)
    cred_helpers: tuple[tuple[str, str], ...] = ()  # (normalised registry host, helper name)
    creds_store: str = ""


def config_path(environ: Mapping[str, str]) -> str:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as the Docker CLI looks for it."""
    directory = environ.get("DOCKER_CONFIG")
    if not directory:
        home = environ.get("HOME") or os.path.expanduser("~")
        directory = os.path.join(home, ".docker")
    return os.path.join(directory, "config.json")


def normalize_registry(key: str) -> str:
    """A config key or registry name as a bare HOST[:PORT]; Docker Hub's many names as 'docker.io'."""
    text = key.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    text = text.split("/", 1)[0].lower()
    if text in ("index.docker.io", DOCKER_HUB_API, DOCKER_HUB):
        return DOCKER_HUB
    return text


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise AuthError(f"{where}: the auth field is not base64 of USER:PASSWORD ({e}); run `docker login` again") from e
    user, sep, password = decoded.partition(":")
    if not sep:
        raise AuthError(f"{where}: the auth field decodes to no USER:PASSWORD pair; run `docker login` again")
    return user, password


def _text(entry: Mapping, key: str, where: str) -> str:
    """entry[key] as text that can be sent (UTF-8: JSON's lone surrogate escapes cannot)."""
    text = str(entry.get(key) or "")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise AuthError(f"{where}: {key} is not valid UTF-8 text; fix it or run `docker login` again") from None
    return text


def parse_docker_config(data: bytes, path: str) -> DockerConfig:
    """A DockerConfig from config.json bytes; AuthError naming `path` when they are malformed."""
    try:
        raw = json.loads(data or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise AuthError(f"{path}: malformed JSON ({e}); fix or remove the Docker config file") from e
    if not isinstance(raw, dict):
        raise AuthError(f"{path}: expected a JSON object; fix or remove the Docker config file")
    auths = []
    entries = raw.get("auths") if raw.get("auths") is not None else {}
    if not isinstance(entries, dict):
        raise AuthError(f"{path}: auths is not a JSON object; fix or remove it")
    for key, entry in sorted(entries.items()):
        if not isinstance(entry, dict):
            continue
        where = f"{path}: auths[{key!r}]"
        user, password = _text(entry, "username", where), _text(entry, "password", where)
        if entry.get("auth"):
            user, password = _decode_auth(_text(entry, "auth", where), where)
        creds = Credentials(user, password, _text(entry, "identitytoken", where),
                            _text(entry, "registrytoken", where), f"{path} auths")
        auths.append((normalize_registry(key), creds))
    helpers = raw.get("credHelpers") if raw.get("credHelpers") is not None else {}
    if not isinstance(helpers, dict):
        raise AuthError(f"{path}: credHelpers is not a JSON object; fix or remove it")
    return DockerConfig(
        path=path,
        auths=tuple(auths),
        cred_helpers=tuple(sorted((normalize_registry(k), str(v)) for k, v in helpers.items())),
        creds_store=str(raw.get("credsStore") or ""),
    )


def load_docker_config(path: str) -> DockerConfig:
    """The config at `path`; an empty one when the file does not exist."""
    try:
        with open(path, "rb") as f:
            return parse_docker_config(f.read(), path)
    except FileNotFoundError:
        return DockerConfig(path="")


def helper_server_url(registry: str) -> str:
    """The server URL the Docker CLI hands a credential helper for `registry`."""
    return DOCKER_HUB_AUTH_KEY if normalize_registry(registry) == DOCKER_HUB else registry


def parse_helper_output(stdout: bytes, helper: str) -> Credentials:
    """Credentials from `docker-credential-NAME get` output ({"ServerURL", "Username", "Secret"})."""
    try:
        data = json.loads(stdout)
        where = f"docker-credential-{helper} get"
        user, secret = _text(data, "Username", where), _text(data, "Secret", where)
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError) as e:
        raise AuthError(f"docker-credential-{helper} get printed no credentials JSON ({e}); check the helper") from e
    if user == _TOKEN_USERNAME:
        return Credentials(identity_token=secret, origin=f"docker-credential-{helper}")
    return Credentials(user, secret, origin=f"docker-credential-{helper}")


def run_helper(helper: str, registry: str, search_path: Optional[str] = None) -> Optional[Credentials]:
    """Ask `docker-credential-HELPER get` for `registry`; None when it has none stored. The helper
    is looked up on `search_path` when given (the user's PATH, for a process that runs with another)."""
    exe = f"docker-credential-{helper}"
    found = shutil.which(exe, path=search_path) if search_path else exe
    try:
        if found is None:
            raise FileNotFoundError(exe)
        # a helper found on the user's PATH runs with it (a script helper calls the tools beside it)
        env = {**os.environ, "PATH": search_path} if search_path else None
        proc = subprocess.run([found, "get"], input=helper_server_url(registry).encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT_S, env=env)
    except FileNotFoundError:
        raise AuthError(
            f"credential helper {exe} (configured for {registry} in the Docker config) is not on PATH; "
            "install it or remove it from credHelpers/credsStore"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {exe} did not answer within {HELPER_TIMEOUT_S:.0f}s for {registry}") from None
    if proc.returncode != 0:
        message = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if "not found" in message.lower():
            return None
        raise AuthError(f"credential helper {exe} failed for {registry} (exit {proc.returncode}): {message[:200]}")
    return parse_helper_output(proc.stdout, helper)


def find_credentials(config: DockerConfig, registry: str, helper_path: Optional[str] = None) -> Optional[Credentials]:
    """Credentials for `registry` as the Docker CLI picks them: credHelpers, then credsStore, then auths
    (helpers looked up on `helper_path` when given, else on PATH)."""
    host = normalize_registry(registry)
    helper = dict(config.cred_helpers).get(host)
    if helper:
        return run_helper(helper, host, helper_path)
    if config.creds_store:
        found = run_helper(config.creds_store, host, helper_path)
        if found is not None:
            return found
    for key, creds in config.auths:
        if key == host and (creds.basic or creds.identity_token or creds.registry_token):
            return creds
    return None


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: a scheme (lower case) and its parameters."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str:
        return dict(self.params).get(key, "")


def _token68_or_params(text: str, i: int) -> tuple[list[tuple[str, str]], int]:
    """Parse `k=v, k="quoted", ...` from text[i:]; stop before a following challenge's scheme."""
    params: list[tuple[str, str]] = []
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        key = text[start:i]
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if not key or j >= n or text[j] != "=":
            return params, start  # a new scheme starts here (or garbage: stop)
        i = j + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            params.append((key.lower(), "".join(value)))
        else:
            start = i
            while i < n and text[i] not in " \t,":
                i += 1
            params.append((key.lower(), text[start:i]))
    return params, i


def parse_challenges(header: str) -> tuple[Challenge, ...]:
    """Every challenge in a WWW-Authenticate value, e.g. 'Bearer realm="...",service="...",scope="..."'."""
    out = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        start = i
        while i < n and header[i] not in " \t,":
            i += 1
        scheme = header[start:i]
        if not scheme:
            break
        params, i = _token68_or_params(header, i)
        out.append(Challenge(scheme.lower(), tuple(params)))
    return tuple(out)


def merge_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    """One scope per resource with the union of its actions: ('repository:a:pull', 'repository:a:push') ->
    ('repository:a:pull,push',). Resources keep their order of first appearance; actions are put in one canonical
    order (pull, push, delete, then any other sorted), because registries list a challenge's actions in either
    order and the token request should not depend on which."""
    merged: dict[tuple[str, str], list[str]] = {}
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, sep, actions = rest.rpartition(":")
        if not sep or not kind:
            merged.setdefault((scope, ""), [])
            continue
        have = merged.setdefault((kind, name), [])
        have.extend(a for a in actions.split(",") if a and a not in have)
    return tuple(f"{k}:{n}:{','.join(sorted(a, key=_action_order))}" if n or a else k for (k, n), a in merged.items())


_KNOWN_ACTIONS = ("pull", "push", "delete")


def _action_order(action: str) -> tuple[int, str]:
    return (_KNOWN_ACTIONS.index(action), "") if action in _KNOWN_ACTIONS else (len(_KNOWN_ACTIONS), action)


def token_request(challenge: Challenge, scopes: tuple[str, ...], creds: Optional[Credentials]) -> tuple[str, str, dict, Optional[bytes]]:
    """(method, url, headers, body) of the token request a Bearer challenge asks for.

    An identity token is exchanged with POST (OAuth2 refresh_token grant); otherwise GET, with Basic credentials
    if there are any (anonymous otherwise).
    """
    realm = challenge.get("realm")
    if not realm:
        raise AuthError(f"the registry's Bearer challenge names no realm (token endpoint): {challenge}")
    all_scopes = merge_scopes(tuple(challenge.get("scope").split()) + tuple(scopes))
    service = challenge.get("service")
    headers: dict = {}
    if creds is not None and creds.identity_token:
        form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token), ("client_id", "lamina")]
        if service:
            form.append(("service", service))
        form.extend(("scope", s) for s in all_scopes)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return "POST", realm, headers, urllib.parse.urlencode(form).encode()
    query = [("service", service)] if service else []
    query.extend(("scope", s) for s in all_scopes)
    if creds is not None and creds.basic:
        headers["Authorization"] = creds.basic
        query.append(("account", creds.username))
    sep = "&" if "?" in realm else "?"
    return "GET", realm + (sep + urllib.parse.urlencode(query) if query else ""), headers, None


def parse_token_response(body: bytes, realm: str) -> tuple[str, Optional[float]]:
    """(token, expires_in seconds or None) from a token endpoint's JSON answer."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise AuthError(f"token endpoint {shown(str(realm))} answered no JSON ({e})") from e
    token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthError(f"token endpoint {shown(str(realm))} answered JSON without a token")
    expires = data.get("expires_in")
    return token, float(expires) if isinstance(expires, (int, float)) and not isinstance(expires, bool) else None
