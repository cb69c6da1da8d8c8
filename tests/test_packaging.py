"""An installed (non-editable) Portico carries its data files: every template under the
packages is named by pyproject.toml's package-data, wherever a refactor moved it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = tuple(p.rstrip("*") for p in CONFIG["tool"]["setuptools"]["packages"]["find"]["include"])
NOT_SHIPPED = {"tests", "bench", "fuzz"}  # run from a checkout, never installed


def test_every_top_level_package_is_installed() -> None:
    """`portico serve` runs the installed package: a new top-level package missing from
    the include list imports in the checkout and fails once installed."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - NOT_SHIPPED
    assert found - set(PACKAGES) == set()


def test_every_data_file_is_in_package_data() -> None:
    package_data: dict[str, list[str]] = CONFIG["tool"]["setuptools"]["package-data"]
    shipped = {
        path
        for package, patterns in package_data.items()
        for pattern in patterns
        for path in (ROOT / package.replace(".", "/")).glob(pattern)
    }
    data_files = {
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert data_files, "found no data files: the walk is looking in the wrong place"
    missing = sorted(str(p.relative_to(ROOT)) for p in data_files - shipped)
    assert missing == [], f"not in [tool.setuptools.package-data]: {missing}"
