"""Installed package versions, recorded in every manifest, settings file and provenance record."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


def package_versions(packages: Iterable[str], missing: str | None = "not installed", python: bool = False) -> dict[str, str | None]:
    """``{package: version}`` from the installed metadata; ``missing`` for a package not installed."""
    found: dict[str, str | None] = {"python": platform.python_version()} if python else {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = missing
    return found
