"""GraphiQL served by Portico itself (placeholder: strawberry's page until vendored)."""

from __future__ import annotations

from starlette.routing import BaseRoute
from strawberry.http.ides import get_graphql_ide_html


def graphiql_page() -> str:
    return get_graphql_ide_html("graphiql")


def graphiql_routes() -> list[BaseRoute]:
    return []
