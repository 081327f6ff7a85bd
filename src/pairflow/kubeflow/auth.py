"""Connect to a KFP endpoint: a token from the environment or the in-cluster SA token."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pairflow.kubeflow.errors import KfpAuthError, KubeflowError

# Where kfp.client reads a projected ServiceAccount token (env override, then default path).
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kfp/token"

AuthMode = Literal["auto", "token", "serviceaccount", "none"]


@dataclass(frozen=True)
class Credentials:
    """How a client authenticates: ``kind`` token / serviceaccount / none (no secret kept)."""

    kind: Literal["token", "serviceaccount", "none"]
    source: str


def sa_token_path() -> Path:
    return Path(os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_PATH)


def resolve_credentials(mode: AuthMode, token_env: str) -> Credentials:
    """Pick the credentials ``mode`` asks for; a clear error when none is available."""
    token_set = bool(os.environ.get(token_env, "").strip())
    sa_path = sa_token_path()
    if mode == "none":
        return Credentials("none", "no auth")
    if mode in ("auto", "token") and token_set:
        return Credentials("token", f"${token_env}")
    if mode == "token":
        raise KfpAuthError(f"kubeflow.auth=token: ${token_env} is not set")
    if sa_path.is_file():
        return Credentials("serviceaccount", str(sa_path))
    if mode == "serviceaccount":
        raise KfpAuthError(f"kubeflow.auth=serviceaccount: no token file at {sa_path}")
    raise KfpAuthError(
        f"no KFP credentials: set ${token_env}, or run in a pod with a projected "
        f"ServiceAccount token at {sa_path} (kubeflow.auth=none for an unauthenticated "
        "port-forward)"
    )


def check_host(host: str) -> str:
    """``host`` as an http(s) URL without a trailing slash."""
    parsed = urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise KubeflowError(f"--host {host!r}: expected an http(s):// URL of the KFP API")
    return host.rstrip("/")


def _token(creds: Credentials, token_env: str) -> str | None:
    if creds.kind == "token":
        return os.environ[token_env].strip()
    if creds.kind == "serviceaccount":
        return Path(creds.source).read_text().strip()
    return None


def preflight(url: str, token: str | None, timeout_s: float = 15.0) -> None:
    """One authenticated GET of ``/apis/v2beta1/healthz``: a fast, clear error when the endpoint
    is down or refuses the token (``kfp.Client`` itself retries healthz for ~25 s, then says
    only "timeout")."""
    req = urllib.request.Request(f"{url}/apis/v2beta1/healthz")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KfpAuthError(f"{url}: KFP API refused the credentials ({exc.code})") from exc
        raise KubeflowError(f"{url}: KFP healthz answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise KubeflowError(f"{url}: KFP API not reachable ({exc})") from exc


def connect(host: str, mode: AuthMode, token_env: str, namespace: str = "") -> Any:
    """A ``kfp.Client`` for ``host`` with the credentials ``mode`` resolves to."""
    # lazy: kfp (slow to import); only this path needs it
    from kfp import Client
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    url = check_host(host)
    creds = resolve_credentials(mode, token_env)
    preflight(url, _token(creds, token_env))
    kwargs: dict[str, Any] = {"host": url}
    if namespace:
        kwargs["namespace"] = namespace
    if creds.kind == "token":
        kwargs["existing_token"] = os.environ[token_env].strip()
    elif creds.kind == "serviceaccount":
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=creds.source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        try:
            return Client(**kwargs)
        except (OSError, TimeoutError) as exc:
            raise KubeflowError(f"{url}: KFP API not reachable ({exc})") from exc
