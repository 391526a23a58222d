"""Domain errors that the HTTP layer turns into 4xx answers."""


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


class TooLarge(DomainError):
    status_code = 413
