"""Which media type a GraphQL response goes out as, from the request's Accept header (the
GraphQL-over-HTTP spec): `application/graphql-response+json` when the client asks for it
(alone, or preferred by q-value, or named beside application/json), `application/json`
for `*/*`, no Accept header, or when preferred; None when neither is acceptable (406)."""

from __future__ import annotations

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"

# Content-Type headers as sent: the spec's media type names its charset.
CONTENT_TYPES = {GRAPHQL_RESPONSE: f"{GRAPHQL_RESPONSE}; charset=utf-8", JSON: JSON}

# A client naming both with one q-value (as graphql-http does) gets the spec's media type;
# a wildcard alone gets application/json, as before the spec.
_SUPPORTED = (GRAPHQL_RESPONSE, JSON)


def negotiate(accept: str | None) -> str | None:
    """The media type to answer with, or None for 406 Not Acceptable."""
    if accept is None or not accept.strip():
        return JSON
    ranges = [_media_range(part) for part in accept.split(",") if part.strip()]
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for rank, media in enumerate(_SUPPORTED):
        q, specificity = _quality(media, ranges)
        if q <= 0:
            continue
        # Named explicitly: the spec's type first; reached by a wildcard: JSON first.
        score = (q, specificity, -rank if specificity == 2 else rank)
        if best is None or score > best:
            best, chosen = score, media
    return chosen


def _media_range(part: str) -> tuple[str, float]:
    """`type/subtype` in lower case and its q-value (1 when absent, 0 when unreadable)."""
    media, *params = (piece.strip() for piece in part.split(";"))
    q = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                q = 0.0
    return media.lower(), q


def _quality(media: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """The q-value of the most specific range matching `media` (RFC 9110), and how specific
    it was: 2 the type itself, 1 `application/*`, 0 `*/*`; (0, 0) when none matches."""
    kind = media.split("/")[0]
    best: tuple[int, float] | None = None
    for candidate, q in ranges:
        if candidate == media:
            specificity = 2
        elif candidate == f"{kind}/*":
            specificity = 1
        elif candidate == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return (best[1], best[0]) if best is not None else (0.0, 0)
