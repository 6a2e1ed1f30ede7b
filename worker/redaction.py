"""Keep the values of secret Kafka settings out of the worker's errors and logs.

librdkafka quotes settings in some of its error strings: a malformed
``sasl.oauthbearer.config`` comes back as "Unrecognized sasl.oauthbearer.config
beginning at: " followed by the rest of the value. A ``Redactor`` knows the values of
the secret settings (those ``worker.config.is_secret`` names) and replaces, in any
text, each whole value, each of its whitespace-separated pieces and the part after
``=`` of each ``key=value`` piece with ``***``.

Note:
    Only verbatim pieces are found: a message that cuts a secret inside a piece, or
    re-encodes it (escaped, hex, base64), is not recognised. Pieces shorter than
    ``_MIN_PIECE_CHARS`` are left alone because they match ordinary words; a whole
    secret value is replaced whatever its length.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from worker.config import is_secret

__all__ = ["RedactingFilter", "Redactor", "secret_values"]

logger = logging.getLogger(__name__)

_REDACTED = "***"
# Shorter pieces of a secret (such as "id" in "id=x") also occur in ordinary words.
_MIN_PIECE_CHARS = 4


def secret_values(kafka: Mapping[str, str]) -> list[str]:
    """Return the values of the secret settings among librdkafka settings."""
    return [value for key, value in kafka.items() if is_secret(key) and value]


class Redactor:
    """Replace known secret values, and their pieces, with ``***`` in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._pieces: tuple[str, ...] = ()
        self.add(secrets)

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact ``secrets`` from now on."""
        pieces = set(self._pieces)
        for secret in secrets:
            if not secret:
                continue
            pieces.add(secret)
            for token in secret.split():
                for piece in (token, token.partition("=")[2]):
                    if len(piece) >= _MIN_PIECE_CHARS:
                        pieces.add(piece)
        # Longest first, so that a whole value goes before the pieces inside it.
        self._pieces = tuple(sorted(pieces, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret piece replaced by ``***``."""
        for piece in self._pieces:
            if piece in text:
                text = text.replace(piece, _REDACTED)
        return text

    def scrub_error(self, exc: BaseException) -> None:
        """Redact ``exc``'s message in place.

        When the message quoted a secret, the chained exception is dropped as well,
        since it holds the same library text and a traceback would print it.
        """
        if not self._pieces:
            return
        message = str(exc)
        clean = self.scrub(message)
        if clean != message:
            exc.args = (clean,)
            exc.__cause__ = None
            exc.__suppress_context__ = True


class RedactingFilter(logging.Filter):
    """A logger filter that redacts every record's message with a ``Redactor``."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            message = record.getMessage()
            clean = self.redactor.scrub(message)
            if clean != message:
                record.msg = clean
                record.args = None
        return True
