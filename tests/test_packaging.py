"""An installed (non-editable) Portico carries its data files: every template under the
packages is named by pyproject.toml's package-data, wherever a refactor moved it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portico", "models", "services", "schema", "resolvers")


def test_every_data_file_is_in_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
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
