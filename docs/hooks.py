"""MkDocs hook: adds the reference pages, rendered from the code on every build.

In memory only (``File.generated``), so ``mkdocs build`` and ``mkdocs serve`` always show
what the code says and no generated file can be committed stale.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files


def _generator() -> ModuleType:
    """docs/gen_reference.py, loaded by path: docs/ is not a package."""
    path = Path(__file__).with_name("gen_reference.py")
    spec = importlib.util.spec_from_file_location("gen_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config: Any) -> Files:
    for name, build in _generator().PAGES.items():
        files.append(File.generated(config, name, content=build()))
    return files
