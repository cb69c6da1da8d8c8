"""GraphiQL served by Portico itself: strawberry's page, its scripts and styles from node_modules.

package.json pins the versions strawberry's own page loads from a CDN (`make install` runs
`npm ci`); this module serves only the few files the page needs, under URLs that carry the
installed version, so browsers may cache them for good and no outside host is ever named.
"""

from __future__ import annotations

import functools
import html
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
STATIC_PREFIX = "/static/graphiql"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
# The URL names the version, so a new install means new URLs: safe to cache for a year.
CACHE_CONTROL = "public, max-age=31536000, immutable"
MISSING = "GraphiQL's scripts are not installed: run make install (it runs npm ci)."


@dataclass(frozen=True)
class Asset:
    package: str  # the npm package, as in package.json
    file: str  # the path inside that package
    media_type: str

    def path(self, node_modules: Path) -> Path:
        return node_modules / self.package / self.file

    def route_path(self) -> str:
        return f"{STATIC_PREFIX}/{self.package}@{{version}}/{self.file}"


# The template's placeholders and the only files served: strawberry's page loads these same ones.
ASSETS: dict[str, Asset] = {
    "react_js": Asset("react", "umd/react.production.min.js", JS),
    "react_dom_js": Asset("react-dom", "umd/react-dom.production.min.js", JS),
    "js_cookie_js": Asset("js-cookie", "dist/js.cookie.min.js", JS),
    "graphiql_js": Asset("graphiql", "graphiql.min.js", JS),
    "graphiql_css": Asset("graphiql", "graphiql.min.css", CSS),
    "explorer_js": Asset("@graphiql/plugin-explorer", "dist/index.umd.js", JS),
    "explorer_css": Asset("@graphiql/plugin-explorer", "dist/style.css", CSS),
}

_PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")


def installed_version(package: str, node_modules: Path = NODE_MODULES) -> str | None:
    """The version npm installed, or None when the package is missing or unreadable."""
    try:
        manifest = json.loads((node_modules / package / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return version if isinstance(version, str) else None


def asset_urls(node_modules: Path = NODE_MODULES) -> dict[str, str] | None:
    """Each placeholder's URL, or None when any file is missing (node_modules not installed)."""
    urls = {}
    for name, asset in ASSETS.items():
        version = installed_version(asset.package, node_modules)
        if version is None or not asset.path(node_modules).is_file():
            return None
        urls[name] = f"{STATIC_PREFIX}/{asset.package}@{version}/{asset.file}"
    return urls


@functools.cache
def _template() -> str:
    return resources.files("portico").joinpath("templates/graphiql.html").read_text("utf-8")


def graphiql_page(node_modules: Path = NODE_MODULES) -> str:
    """The GraphiQL HTML; a plain "run make install" page when the scripts are missing."""
    urls = asset_urls(node_modules)
    if urls is None:
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Portico GraphiQL</title></head>"
            f"<body><p>{html.escape(MISSING)}</p></body></html>"
        )
    return _PLACEHOLDER.sub(lambda match: html.escape(urls[match.group(1)]), _template())


def _asset_endpoint(asset: Asset, node_modules: Path) -> Route:
    async def serve(request: Request) -> Response:
        path = asset.path(node_modules)
        installed = installed_version(asset.package, node_modules)
        if installed is None or not path.is_file():
            return PlainTextResponse(MISSING, 404)
        # An old URL (another version) must not get today's file under an immutable header.
        if request.path_params["version"] != installed:
            return PlainTextResponse("Not Found", 404)
        return FileResponse(
            path,
            media_type=asset.media_type,
            headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
        )

    return Route(asset.route_path(), serve, methods=["GET", "HEAD"])


def graphiql_routes(node_modules: Path = NODE_MODULES) -> list[BaseRoute]:
    """One route per vendored file: nothing else under node_modules is reachable."""
    return [_asset_endpoint(asset, node_modules) for asset in ASSETS.values()]
