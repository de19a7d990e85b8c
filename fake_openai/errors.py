"""OpenAI-shaped API errors: ``{"error": {"message", "type", "param", "code"}}`` with the status the SDK maps."""

from __future__ import annotations

from dataclasses import dataclass, field

# status -> (type, code, message) as the real API words them, so SDK exception messages look familiar.
_CATALOGUE: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request (x-fake-status)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    409: ("invalid_request_error", None, "Conflict (x-fake-status)."),
    422: ("invalid_request_error", None, "Unprocessable entity (x-fake-status)."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again later.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


@dataclass
class APIError(Exception):
    """An error reply; raised anywhere in request handling and turned into the HTTP response by the router."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @classmethod
    def for_status(cls, status: int, retry_after: float | None = None) -> APIError:
        """The canned error of an HTTP status, with Retry-After where the real API sends it."""
        kind, code, message = _CATALOGUE.get(
            status,
            (
                "server_error" if status >= 500 else "invalid_request_error",
                None,
                f"HTTP {status} (x-fake-status).",
            ),
        )
        if retry_after is None and status == 429:
            retry_after = 1.0
        headers = {} if retry_after is None else {"retry-after": _format_seconds(retry_after)}
        return cls(status, message, kind, None, code, headers)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a request the real API would reject, naming the offending parameter."""
    return APIError(400, message, "invalid_request_error", param, code)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
