"""The API's request and response classes (bodies read and handed over in one piece) and its
strict JSON parsing."""

from __future__ import annotations

import json
from typing import Any

from flask import Request, Response
from flask.json.provider import DefaultJSONProvider

from inference.core.errors import InvalidJson

FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # werkzeug's form parser streams these


class WholeBodyRequest(Request):
    """Reads a body of known length with one read. werkzeug reads a body 64 KiB at a time, and
    under gunicorn (which read ahead up to 1 MiB and copied what it held ahead on each read) a
    9 MB body of 128 pictures cost a quarter of the API's CPU on that request. (werkzeug's stream
    still enforces MAX_CONTENT_LENGTH: a longer body gets 413 before anything is read.)"""

    def get_data(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_cached_data", None) is None and self.content_length and self.mimetype not in FORMS:
            chunks, left = [], self.content_length
            while left > 0:  # a server may hand it over in pieces
                chunk = self.stream.read(left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            self._cached_data = b"".join(chunks)
        return super().get_data(*args, **kwargs)

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        """A body that is not JSON, or not what its Content-Type says: 400 `invalid_json`."""
        if e is None:
            raise InvalidJson(f"send a JSON object (Content-Type: application/json) or a multipart form, "
                           f"not {self.mimetype or 'a body without a Content-Type'}")
        raise InvalidJson(f"the body is not valid JSON: {e}")


class WholeBodyResponse(Response):
    """Hands a body already in memory (every JSON answer) to the server as one list: werkzeug's
    iterator made granian pull the body from Python in pieces (its `response_iter`), ~15 % of the
    API processes' time holding the GIL at saturation; a list goes in one `response_bytes`. Files
    (Swagger UI's) and generators still stream."""

    def get_app_iter(self, environ):
        app_iter = super().get_app_iter(environ)
        if not self.is_sequence or self.direct_passthrough:
            return app_iter
        try:
            return [b"".join(app_iter)]
        finally:
            app_iter.close()  # what the server would have called: the response's close callbacks


class StrictJSONProvider(DefaultJSONProvider):
    """JSON as RFC 8259 has it, and nothing that could be read two ways: no duplicate keys (which
    would win?), no NaN or Infinity (not JSON). Any malformed body, however deep or large its
    numbers, fails as a ValueError, which the request turns into 400 `invalid_json`: Python's
    parser raises RecursionError at ~1,000 levels of nesting, which was a 500."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return json.loads(s, object_pairs_hook=_without_duplicate_keys, parse_constant=_not_json, **kwargs)
        except RecursionError:
            raise ValueError("nested too deeply") from None


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {duplicate!r} appears twice in one object")
    return body


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")
