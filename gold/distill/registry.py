"""Algorithm registry: a new algorithm is one module in ``gold/distill/`` plus one config.

An algorithm module declares its settings dataclass (``gold.distill.settings``) and
registers its builder::

    @registry.register("dm", DMSettings)
    def make(s: DMSettings, config, real) -> common.Algorithm: ...

:func:`build` reads the settings from the config (validated), runs the checks every
algorithm shares (real init needs enough kept images per class) and calls the builder.
Modules are discovered on first use: every module of the ``gold.distill`` package is
imported once, so nothing else lists the algorithms.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

from gold import augment as gaug
from gold.distill import common
from gold.distill import settings as gset

Builder = Callable[[Any, Any, common.RealData], common.Algorithm]


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm.

    Attributes:
      name: lower-case name as in the literature (``config.algorithm``).
      settings: its settings dataclass (subclass of ``common.BaseSettings``).
      make: ``(settings, config, real) -> common.Algorithm``.
      module: the defining module.
      needs_buffer: the run reads an expert buffer (``config.buffer_dir``; MTT).
    """

    name: str
    settings: type
    make: Builder
    module: str
    needs_buffer: bool = False


_REGISTRY: dict[str, AlgorithmSpec] = {}
_DISCOVERED: list[bool] = []


def register(name: str, settings_cls: type, *, needs_buffer: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering ``make`` as algorithm ``name`` with ``settings_cls``."""
    key = name.lower()

    def decorate(make: Builder) -> Builder:
        if key in _REGISTRY and _REGISTRY[key].module != make.__module__:
            raise ValueError(f"algorithm {key!r} registered twice ({_REGISTRY[key].module}, {make.__module__})")
        _REGISTRY[key] = AlgorithmSpec(key, settings_cls, make, make.__module__, needs_buffer)
        return make

    return decorate


def _discover() -> None:
    if _DISCOVERED:
        return
    import gold.distill as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _DISCOVERED.append(True)


def names() -> tuple[str, ...]:
    """Registered algorithm names, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def get(name: str) -> AlgorithmSpec:
    """The registered algorithm ``name``.

    Raises:
      ValueError: unknown name (lists the registered ones).
    """
    _discover()
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(names())}")
    return _REGISTRY[key]


def read_settings(config: Any) -> Any:
    """The validated settings of ``config.algorithm`` read from ``config``."""
    return gset.from_config(get(config.algorithm).settings, config)


def build(config: Any, real: common.RealData) -> common.Algorithm:
    """Build ``config.algorithm`` on the selected real data ``real``.

    Raises:
      ValueError: unknown algorithm, bad settings, DSA on clips, or real init with a
        class that keeps fewer images than the synthetic set needs.
    """
    spec = get(config.algorithm)
    s = gset.from_config(spec.settings, config)
    gaug.require_images(str(getattr(s, "dsa_strategy", "none")), tuple(real.image_shape))
    if s.init == "real":
        common.check_real_init(real, s.real_images_per_class())
    return spec.make(s, config, real)


def settings_docs(name: str) -> dict[str, str]:
    """``{field: doc}`` of algorithm ``name``'s settings (``--show_config``)."""
    return gset.docs(get(name).settings)


__all__ = ["AlgorithmSpec", "build", "get", "names", "read_settings", "register", "settings_docs"]
