"""The one place that builds Kubernetes `Status` errors (code, reason, details, causes).

Raised anywhere below the apiserver as `StatusError`; the apiserver turns it into the JSON body
real clients parse (kubectl prints `Error from server (Reason): message`)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "StatusError", "Cause", "status_success", "bad_request", "unauthorized", "forbidden",
    "not_found", "already_exists", "conflict", "invalid", "gone", "method_not_allowed",
    "unsupported_media_type", "internal_error", "too_many_requests", "not_acceptable",
    "service_unavailable", "insufficient_storage", "timeout", "expired", "request_entity_too_large", "field_cause",
    "wire_details", "wire_cause", "exit_code_status", "stream_success",
]

Cause = dict[str, str]  # {"type": "FieldValueInvalid", "message": ..., "field": "spec.replicas"}
# (serialized with the type as "reason", upstream's JSON name for StatusCause.Type)


class StatusError(Exception):
    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        """The Status body, its keys in upstream's struct order (metav1.Status: kind,
        apiVersion, metadata, status, message, reason, details, code)."""
        return {"kind": "Status", "apiVersion": "v1", **self.stream_status()}

    def stream_status(self) -> dict[str, Any]:
        """The Status as a kubelet writes it on an exec/attach error channel: no kind or
        apiVersion (json.Marshal of a bare metav1.Status), code left out when 0."""
        status: dict[str, Any] = {"metadata": {}, "status": "Failure"}
        if self.message:
            status["message"] = self.message
        if self.reason:
            status["reason"] = self.reason
        if self.details:
            status["details"] = wire_details(self.details)
        if self.code:
            status["code"] = self.code
        return status

    def __repr__(self) -> str:
        return f"StatusError({self.code}, {self.reason!r}, {self.message!r})"


def status_success(details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success"}
    if details:
        out["details"] = wire_details(details)
    return out


# metav1.StatusDetails and metav1.StatusCause in struct order; a cause's Type is "reason"
# in JSON (k3py's causes carry it as "type", as the Go field is named)
_DETAIL_KEYS = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")


def wire_details(details: dict[str, Any]) -> dict[str, Any]:
    """StatusDetails as upstream serializes them: name, group, kind, uid, causes
    (reason, message, field), retryAfterSeconds; empty fields left out."""
    out: dict[str, Any] = {}
    for key in _DETAIL_KEYS:
        value = details.get(key)
        if not value:
            continue
        out[key] = [wire_cause(c) for c in value] if key == "causes" else value
    return out


def wire_cause(cause: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reason = cause.get("reason") or cause.get("type")
    if reason:
        out["reason"] = reason
    for key in ("message", "field"):
        if cause.get(key):
            out[key] = cause[key]
    return out


def exit_code_status(command: list[str], code: int) -> dict[str, Any]:
    """What a kubelet writes on the exec error channel when the command exits non-zero
    (kubectl and the Python client read the code from the ExitCode cause)."""
    return StatusError(0, "NonZeroExitCode",
                       f"command terminated with non-zero exit code: error executing "
                       f"command [{' '.join(command)}], exit code {code}",
                       {"causes": [{"reason": "ExitCode", "message": str(code)}]}
                       ).stream_status()


def stream_success() -> dict[str, Any]:
    """The exec/attach error channel's Success (json.Marshal of a bare metav1.Status)."""
    return {"metadata": {}, "status": "Success"}


def _details(group: str, kind: str, name: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = kind
    return d


def _gr(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def unauthorized(message: str = "Unauthorized") -> StatusError:
    return StatusError(401, "Unauthorized", message)


def forbidden(message: str, group: str = "", plural: str = "", name: str | None = None) -> StatusError:
    return StatusError(403, "Forbidden", message, _details(group, plural, name) if plural else None)


def not_found(group: str, plural: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{_gr(group, plural)} "{name}" not found',
                       _details(group, plural, name))


def already_exists(group: str, plural: str, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists", f'{_gr(group, plural)} "{name}" already exists',
                       _details(group, plural, name))


def conflict(group: str, plural: str, name: str, why: str) -> StatusError:
    return StatusError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {_gr(group, plural)} "{name}": {why}',
        _details(group, plural, name))


def invalid(group: str, kind: str, name: str, causes: list[Cause]) -> StatusError:
    """422 Invalid, message formatted as upstream: `Kind "name" is invalid: [f: msg, ...]`."""
    parts = []
    for c in causes:
        msg = c.get("message", "")
        parts.append(f'{c["field"]}: {msg}' if c.get("field") else msg)
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(group, kind, name)
    details["causes"] = causes
    qual = f"{kind}.{group}" if group else kind
    return StatusError(422, "Invalid", f'{qual} "{name}" is invalid: {joined}', details)


def gone(message: str) -> StatusError:
    return StatusError(410, "Gone", message)


def expired(message: str) -> StatusError:
    # upstream: too old resource version is 410 with reason Expired
    return StatusError(410, "Expired", message)


def method_not_allowed(message: str) -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


def not_acceptable(message: str) -> StatusError:
    return StatusError(406, "NotAcceptable", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media "
                       f"types include: application/json, application/yaml, "
                       f"application/json-patch+json, application/merge-patch+json, "
                       f"application/strategic-merge-patch+json, application/apply-patch+yaml "
                       f"(got {content_type!r})")


def too_many_requests(message: str) -> StatusError:
    return StatusError(429, "TooManyRequests", message)


def request_entity_too_large(message: str) -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", f"Request entity too large: {message}")


def internal_error(message: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {message}")


def service_unavailable(message: str) -> StatusError:
    return StatusError(503, "ServiceUnavailable", message)


def insufficient_storage(message: str) -> StatusError:
    """The datastore's disk is full (kube-apiserver answers etcd's "database space exceeded"
    with a 500; 507 says what it is, and clients treat it as a server error all the same)."""
    return StatusError(507, "InsufficientStorage", message)


def timeout(message: str) -> StatusError:
    return StatusError(504, "Timeout", message)


def field_cause(field: str, message: str, type_: str = "FieldValueInvalid") -> Cause:
    return {"type": type_, "message": message, "field": field}
