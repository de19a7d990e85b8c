"""Keeps web pages out of serve's query API (cross-site request forgery and DNS rebinding).

A page the user visits can send requests to 127.0.0.1: a "simple" cross-origin POST (``text/plain``) needs no
preflight, and a page whose own host name resolves to 127.0.0.1 (DNS rebinding) is even same-origin to the
browser. The defence, the one OWASP lists for same-origin APIs, needs no state:

- only ``Content-Type: application/json`` is accepted, which a cross-origin page can send only after a CORS
  preflight that serve never grants;
- the browser's own ``Sec-Fetch-Site`` and ``Origin`` headers must say the request comes from serve's origin
  (clients that are not browsers, such as the CLI, send neither);
- without a token, ``Host`` must name serve's own address: a rebinding page's requests carry its host name.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def refusal(header: Callable[[str], str | None], listen_host: str, token_set: bool) -> tuple[int, str] | None:
    """(status, message) when a request to the query API must be refused, else None; ``header`` reads one
    request header by name (case-insensitive)."""
    media_type = (header("Content-Type") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return 415, "the query API accepts Content-Type: application/json only"
    site = header("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return 403, f"refused a request from another site (Sec-Fetch-Site: {site.strip()[:40]})"
    host = (header("Host") or "").strip().lower()
    if not token_set and _hostname(host) not in _LOOPBACK_NAMES | {listen_host.lower()}:
        return (
            403,
            f"Host {host[:100]!r} is not this serve's address; use http://127.0.0.1 (or pass a --token)",
        )
    origin = header("Origin")
    if origin is not None and urlsplit(origin.strip()).netloc.lower() != host:
        return 403, f"refused a request from another origin ({origin.strip()[:100]})"
    return None


def _hostname(host: str) -> str:
    """The name in a Host header value: ``[::1]:4318`` → ``::1``, ``localhost:4318`` → ``localhost``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
