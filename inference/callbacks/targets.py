"""Where a callback may go: an http(s) URL whose host is on CALLBACK_ALLOWED_HOSTS (exact names,
or `*.example.com` for its subdomains), never with credentials in it. An allowed host that
resolves to an internal address (loopback, private, link-local...) is called only when it is
listed by its exact name or address: a wildcard entry never reaches the inside. The delivery
connects to the address that was checked."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from inference.core.errors import CallbackNotAllowed

MAX_URL_LENGTH = 2048


def allowed_hosts(setting: str) -> list[str]:
    return [host.strip().lower() for host in setting.split(",") if host.strip()]


def check_url(url: object, allowed: list[str]) -> str:
    """The URL's host if a callback may go there; CallbackNotAllowed otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise CallbackNotAllowed(f"callback_url must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # a port that is no number raises here
    except ValueError as exc:
        raise CallbackNotAllowed(f"callback_url is not a URL: {exc}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackNotAllowed("callback_url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackNotAllowed("callback_url must not carry credentials")
    if port == 0:
        raise CallbackNotAllowed("callback_url has port 0")
    if not allowed:
        raise CallbackNotAllowed("callbacks are off: no host is on CALLBACK_ALLOWED_HOSTS")
    if not any(host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in allowed):
        raise CallbackNotAllowed(f"callback host {host!r} is not on CALLBACK_ALLOWED_HOSTS")
    return host


def internal(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_global or ip.is_multicast


def checked_address(host: str, port: int, allowed: list[str]) -> str:
    """At delivery: the address to connect to, resolved now (DNS may have changed since the
    submission) and checked; the connection goes to it, not to a second lookup that could answer
    otherwise (DNS rebinding)."""
    try:
        addresses = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except OSError as exc:
        raise CallbackNotAllowed(f"callback host {host!r} does not resolve: {exc}") from None
    if host not in allowed:  # listed by its exact name or address, it may be internal: the operator meant it
        inside = sorted({address for address in addresses if internal(address)})
        if inside:
            raise CallbackNotAllowed(f"callback host {host!r} resolves to internal addresses {inside}; list it by name to allow that")
    return addresses[0]
