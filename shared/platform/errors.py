"""Domain errors that the HTTP layer turns into 4xx answers, and how an answer states a size limit."""


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """A transition or an edit that the current state does not allow; the message names that state."""

    status_code = 409


class Unprocessable(DomainError):
    """A request well formed but missing what the current state requires (the message names it)."""

    status_code = 422


class Unavailable(DomainError):
    """Something this call needs is not there (the hub's Kafka refused, a setting is missing)."""

    status_code = 503


class TooLarge(DomainError):
    status_code = 413


def size_in_words(size: int) -> str:
    """A size limit as an answer states it: "10 MiB", "10.25 MiB", "64 KiB", or exact bytes where a
    unit would round it (a limit text must say the limit it enforces, not a neighbour of it)."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size * 100 % scale == 0:
            return f"{size / scale:g} {unit}"
    return f"{size:,} bytes"
