"""The headers every response of the viewer carries, and safe ``Content-Disposition`` values.

:class:`SecurityHeaders` wraps the whole application (see
:func:`runstore.viewer.app.create_app`), outside Starlette's own error
middleware, so pages, downloads, static files, the 404 and 405 of the router,
the 400 of the host check and the 500 of an unexpected exception all carry
the same headers. The pages use no script and no inline style: the policy
allows none.
"""

from __future__ import annotations

import unicodedata
from typing import Final
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PAGE_CSP", "RAW_CSP", "SecurityHeaders", "content_disposition"]

PAGE_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""The pages' policy: the one stylesheet, no script, no inline style, never framed."""
RAW_CSP: Final = "sandbox; default-src 'none'; frame-ancestors 'none'"
"""Stored bytes served as they are (artifacts, records): inert, sandboxed, never framed."""

_HEADERS: Final = (
    (b"content-security-policy", PAGE_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_STATIC: Final = "/static/"
_UNPRINTABLE: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories kept out of file names: controls, format characters (bidi
overrides), lone surrogates, line and paragraph separators."""


class SecurityHeaders:
    """Adds the security headers to every HTTP response that lacks them.

    A response may set a stricter policy of its own (the raw downloads do:
    :data:`RAW_CSP`). Pages and downloads are never cached (``no-store``); the
    static files are revalidated (``no-cache``: their ETag makes that cheap).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cache = b"no-cache" if scope["path"].startswith(_STATIC) else b"no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in _HEADERS if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", cache))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _printable(name: str) -> str:
    return "".join("_" if unicodedata.category(c) in _UNPRINTABLE else c for c in name)


def content_disposition(disposition: str, filename: str) -> str:
    """A ``Content-Disposition`` value (RFC 6266) for a file called ``filename``.

    ``filename="..."`` is the ASCII fallback (other characters become ``_``;
    quotes and backslashes are escaped) and ``filename*=UTF-8''...`` the whole
    name, percent-encoded (RFC 5987). Control, format and separator characters
    become ``_`` in both, so nothing in a name can end or split the header.
    """
    name = _printable(filename) or "download"
    fallback = "".join(c if " " <= c <= "~" else "_" for c in name)
    fallback = fallback.replace("\\", "\\\\").replace('"', '\\"')
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
