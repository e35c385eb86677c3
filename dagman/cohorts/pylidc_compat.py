"""Compatibility shims that let pylidc 0.2.3 run on the current stack, and a DICOM-root override.

pylidc 0.2.3 was written for numpy < 1.24, setuptools with ``pkg_resources`` and Python < 3.12. Three small shims
fix it without pinning anything (see notes/pylidc.md):

- ``np.int`` / ``np.float`` aliases (removed in numpy 1.24; pylidc's centroid, volume, masks and clustering use them);
- a minimal ``pkg_resources`` stand-in with ``resource_filename`` (pylidc's ``__init__`` imports it only to
  locate its bundled ``pylidc.sqlite``; setuptools >= 81 and Python 3.12+ virtual environments lack it);
- ``configparser.SafeConfigParser`` aliased to ``ConfigParser`` (removed in Python 3.12).

pylidc normally reads the DICOM root from ``~/.pylidcrc`` and writes a template there when the file is missing.
The project never reads or writes the user's home folder: :func:`pylidc_dicom_root` replaces pylidc's
config lookup with the configured root for the duration of a ``with`` block.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["apply_shims", "import_pylidc", "pylidc_dicom_root"]


def _resource_filename(package: str, resource: str) -> str:
    """``pkg_resources.resource_filename`` for a plain installed package: the file beside its ``__init__``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"cannot locate package {package!r} to find its resource {resource!r}")
    return str(Path(next(iter(spec.submodule_search_locations))) / resource)


def apply_shims() -> None:
    """Install the numpy, ``pkg_resources`` and ``configparser`` shims pylidc needs; idempotent.

    Each shim is added only where the name is missing, so an environment that still has the original (an
    older numpy, setuptools < 81) keeps it untouched.
    """
    # numpy 2 forbids getattr on the removed aliases (it raises AttributeError with a hint): test the namespace
    for alias, builtin in (("int", int), ("float", float)):
        if alias not in np.__dict__:
            setattr(np, alias, builtin)
    if not hasattr(configparser, "SafeConfigParser"):
        configparser.SafeConfigParser = configparser.ConfigParser  # type: ignore[attr-defined]
    try:
        with _warnings_silenced():
            import pkg_resources  # noqa: F401  (setuptools < 81 still has it; pylidc imports it next)
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")
        stand_in.__doc__ = "Minimal stand-in installed by dagman for pylidc (resource_filename only)."
        stand_in.resource_filename = _resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stand_in


def import_pylidc() -> Any:
    """Apply the shims and return the imported ``pylidc`` module.

    The DICOM root is not configured here; wrap image access in :func:`pylidc_dicom_root`.
    """
    apply_shims()
    with _warnings_silenced():
        import pylidc

    return pylidc


@contextlib.contextmanager
def _warnings_silenced() -> Iterator[None]:
    """Silence the deprecation warnings that importing ``pkg_resources`` and pylidc's modules emit."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


@contextlib.contextmanager
def pylidc_dicom_root(root: str | Path) -> Iterator[Any]:
    """Point pylidc at ``root`` (the folder holding ``LIDC-IDRI-dddd/`` patient folders) inside a ``with`` block.

    pylidc's ``Scan`` module looks the root up through the module-level function
    ``_get_dicom_file_path_from_config_file``, which reads (and, when missing, writes) ``~/.pylidcrc``. That
    function and the config-file name used in pylidc's error messages are replaced for the duration of the
    block, so no file in the user's home folder is read or written. Not thread-safe (pylidc's config is
    process-global); worker processes each enter their own block.

    Args:
        root: the LIDC-IDRI DICOM root, as the project's config names it.

    Yields:
        The imported ``pylidc`` module.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"LIDC DICOM root {root} does not exist or is not a folder; set the LIDC root in the config "
            "(the folder that holds the LIDC-IDRI-dddd patient folders)"
        )
    pl = import_pylidc()
    scan_module = sys.modules["pylidc.Scan"]
    saved = {
        name: getattr(scan_module, name)
        for name in ("_get_dicom_file_path_from_config_file", "_get_config_file")
    }
    scan_module._get_dicom_file_path_from_config_file = lambda: str(root)
    scan_module._get_config_file = lambda: f"(dagman config: LIDC root {root})"
    try:
        yield pl
    finally:
        for name, value in saved.items():
            setattr(scan_module, name, value)
