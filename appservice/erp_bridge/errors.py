"""The error every API of the bridge answers with: JSON `{"errcode", "error"}` and a status."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def body(self) -> dict:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


def not_found(what: str) -> ApiError:
    return ApiError(404, "M_NOT_FOUND", what)


def conflict(what: str) -> ApiError:
    return ApiError(409, "IO.ERPCHAT.CONFLICT", what)


def forbidden(what: str) -> ApiError:
    return ApiError(403, "M_FORBIDDEN", what)


def invalid(what: str) -> ApiError:
    return ApiError(400, "M_INVALID_PARAM", what)
