"""The exceptions adfunnel raises; each carries what a caller needs to answer a client."""

from __future__ import annotations

from typing import ClassVar


class AdfunnelError(Exception):
    """Base of every adfunnel error."""


class BusUnavailable(AdfunnelError):
    """The bus could not durably take the events; nothing was accepted."""


class StorageUnavailable(AdfunnelError):
    """PostgreSQL could not be reached or refused the transaction."""


class NotReady(AdfunnelError):
    """A component has not finished starting; answered with 503."""


class EmbeddedServerError(AdfunnelError):
    """An embedded NATS or PostgreSQL server failed to start or died."""


class ReplayRefused(AdfunnelError):
    """The gateway refused a replay batch for good (a 4xx: a wrong signature, a body too big)."""


class RequestError(AdfunnelError):
    """A client request that is answered with a 4xx."""

    status_code = 400
    code = "bad_request"
    # Response headers the answer must carry (e.g. WWW-Authenticate on a 401).
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, message: str, details: list[object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidBody(RequestError):
    """The body is not JSON, or not an event object or array of them."""

    code = "invalid_body"


class PayloadTooLarge(RequestError):
    """The body or the batch is over the configured limit."""

    status_code = 413
    code = "payload_too_large"


class BadSignature(RequestError):
    """The HMAC signature is missing or wrong."""

    status_code = 401
    code = "bad_signature"


class Unauthorized(RequestError):
    """A report asked for without a valid API key while keys are configured."""

    status_code = 401
    code = "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {
        "WWW-Authenticate": 'Bearer realm="adfunnel reports"'
    }


class InvalidParameter(RequestError):
    """A query parameter is unknown, malformed or inconsistent with another."""

    code = "invalid_parameter"


class NotFound(RequestError):
    """The requested resource does not exist."""

    status_code = 404
    code = "not_found"
