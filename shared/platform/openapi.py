"""The OpenAPI document as the services answer (SPEC section 5: a client generated from it must parse
every answer): one error body for every error, declared on each operation that can send it."""
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"


class FieldError(BaseModel):
    field: str = Field(description='where: a body field such as "terms.rate", "body", or "query.limit"')
    message: str
    type: str = Field(description="the kind of problem, e.g. missing, string_too_long, json_invalid")


class ErrorOut(BaseModel):
    """The body of every error the services answer."""

    detail: str = Field(description="what is wrong, in words")
    errors: list[FieldError] | None = Field(None, description="on a 422 only: each invalid field")


ERRORS = {
    400: "The body could not be parsed, or the database refused a value that validation let through",
    401: "No bearer token, or an unknown or revoked one; answered before the body is read",
    403: "The token lacks the permission this call needs",
    404: "What the path names does not exist; the detail says which",
    409: "The current state does not allow this; the detail names the state",
    413: "The request body is over a limit, which the detail states (this service's limit on any body, or the"
         " attachment limit); nothing was stored",
    422: "The request is invalid; `errors` names each field",
    503: "The database is unavailable or busy; try again after Retry-After seconds",
}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
}
CONFLICT = {409: {"model": ErrorOut, "description": ERRORS[409]}}  # for operations whose state can refuse them


def install_openapi(app: FastAPI) -> None:
    """The document FastAPI generates, with the errors of each operation declared as `ErrorOut`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare_errors(generate())
        return app.openapi_schema

    app.openapi = openapi


def _declare_errors(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, which is not ours
        schemas.pop(name, None)
    schemas.update(models_json_schema([(ErrorOut, "serialization")], ref_template=REF)[1]["$defs"])
    for operation in (op for path in document["paths"].values() for op in path.values()):
        for code in errors_of(operation):
            operation["responses"][str(code)] = _error_response(code)


def errors_of(operation: dict[str, Any]) -> list[int]:
    """The errors an operation can answer follow from what it takes: a token (looked up in the
    database), parameters or a body (validated, then stored), an id in the path (which may not exist),
    and any state it changes (declared by the operation itself, e.g. `CONFLICT`)."""
    parameters = operation.get("parameters", [])
    takes_input = bool(parameters) or "requestBody" in operation
    codes = []
    if "security" in operation:
        codes += [401, 403, 503]
    if takes_input:
        codes += [400, 422]
    if any(parameter["in"] == "path" for parameter in parameters):
        codes.append(404)
    if "requestBody" in operation:
        codes.append(413)
    return sorted(codes)


def _error_response(code: int) -> dict[str, Any]:
    response = {"description": ERRORS[code],
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}}}
    if code in HEADERS:
        response["headers"] = HEADERS[code]
    return response
