"""The families genbench has, found by importing every module of ``genbench.models`` rather than kept in a
list: a new ``models/<family>.py`` is known as soon as it exists."""

import importlib
import pkgutil

import genbench.models
from genbench.models.base import GenerativeModel


def _subclasses(cls: type) -> set[type]:
    direct = set(cls.__subclasses__())
    return direct.union(*(_subclasses(c) for c in direct))


def families() -> dict[str, type[GenerativeModel]]:
    """Family name (its ``family`` attribute) -> class, for every family module in ``genbench.models``, in
    the order of the names (the same in every process, so tests parametrized by it collect alike)."""
    for info in pkgutil.iter_modules(genbench.models.__path__):
        importlib.import_module(f"genbench.models.{info.name}")
    found = {cls.family: cls for cls in _subclasses(GenerativeModel) if "family" in vars(cls)}
    return dict(sorted(found.items()))
