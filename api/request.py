"""The API's request class: a request body read in one piece."""

from __future__ import annotations

from typing import Any

from flask import Request

FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # werkzeug's form parser streams these


class WholeBodyRequest(Request):
    """Reads a body of known length with one read. werkzeug reads a body 64 KiB at a time, and
    gunicorn, which reads ahead up to 1 MiB, copies what it holds ahead on each of them: a 9 MB
    body of 128 pictures cost a quarter of the API's CPU on that request. (werkzeug's stream
    still enforces MAX_CONTENT_LENGTH: a longer body gets 413 before anything is read.)"""

    def get_data(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_cached_data", None) is None and self.content_length and self.mimetype not in FORMS:
            chunks, left = [], self.content_length
            while left > 0:  # one read with gunicorn; a server may hand it over in pieces
                chunk = self.stream.read(left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            self._cached_data = b"".join(chunks)
        return super().get_data(*args, **kwargs)
