"""Reading a GraphQL request from JSON, a multipart upload or a WebSocket message: whatever
strawberry would trip over (and answer 500) is refused here as a BadRequest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import UploadFile

from portico.refusals import BadRequest

NO_QUERY = "No GraphQL query found in the request"  # strawberry's own words over HTTP


def decode_json(data: str | bytes) -> Any:
    """orjson refuses documents nested over 1024 levels (json.loads overflows the stack and
    raises RecursionError); it raises JSONDecodeError, which strawberry handles, for both."""
    return orjson.loads(data)


def parse_json_object(data: str | bytes) -> dict[str, Any] | list[Any]:
    """A JSON object (or a list, a batch strawberry refuses with its own message)."""
    try:
        value = decode_json(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Unable to parse the request's JSON: {exc}") from exc
    if not isinstance(value, dict | list):
        raise BadRequest(f"Expected a JSON object, not {_kind(value)}")
    return value


def check_request(
    query: object,
    variables: object,
    operation_name: object,
    extensions: object,
    *,
    persisted: bool = False,
) -> None:
    """The fields of one GraphQL request, as the GraphQL-over-HTTP spec types them (in
    strawberry's words where it checks them too). With `persisted` (HTTP, where Apollo's
    persisted queries are understood) a request naming a persistedQuery may leave the query
    out."""
    names_hash = isinstance(extensions, dict) and "persistedQuery" in extensions
    if (query is None or query == "") and not (persisted and names_hash):
        raise BadRequest(NO_QUERY)
    if not isinstance(query, str | None):
        raise BadRequest("The GraphQL operation's `query` must be a string or null, if provided.")
    if not isinstance(variables, dict | None):
        raise BadRequest(
            "The GraphQL operation's `variables` must be an object or null, if provided."
        )
    if not isinstance(operation_name, str | None):
        raise BadRequest(
            "The GraphQL operation's `operationName` must be a string or null, if provided."
        )
    if not isinstance(extensions, dict | None):
        raise BadRequest(
            "The GraphQL operation's `extensions` must be an object or null, if provided."
        )


def text_field(form: Mapping[str, Any], name: str) -> str:
    """A multipart request's `operations` or `map`: a text field, never a file."""
    value = form.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"A multipart request needs the `{name}` text field")
    return value


def place_files(
    operations: dict[str, Any] | list[Any], files_map: object, form: Mapping[str, Any]
) -> dict[str, Any] | list[Any]:
    """Puts each uploaded file where `map` says (graphql-multipart-request-spec): map is
    {"<file field>": ["variables.file", ...]}, and every path leads to an existing value."""
    if not isinstance(files_map, dict):
        raise BadRequest("`map` must be a JSON object of file fields to lists of paths")
    for field, paths in files_map.items():
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise BadRequest(f"`map` names a file the request does not carry: {_quote(field)}")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadRequest(f"`map` must list the paths of {_quote(field)} as strings")
        for path in paths:
            *through, last = path.split(".")
            target: Any = operations
            for key in through:
                target = target[_key(target, key, path)]
            target[_key(target, last, path)] = upload
    return operations


def _key(container: object, key: str, path: str) -> str | int:
    """`key` of an object, or an index of a list, that exists in `container`."""
    if isinstance(container, dict) and key in container:
        return key
    if isinstance(container, list) and key.isascii() and key.isdigit():
        index = int(key)
        if index < len(container):
            return index
    raise BadRequest(f"`map` path {_quote(path)} does not lead to a value in `operations`")


def _kind(value: object) -> str:
    return {str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _quote(text: str, limit: int = 100) -> str:
    """The client's own text in a message, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
