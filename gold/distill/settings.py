"""Algorithm settings declared once: a frozen dataclass per algorithm.

Each field of a settings dataclass is declared with :func:`setting` (its default and a
one-line doc). The same declaration gives

* the config block of the algorithm (:func:`to_config`; ``configs/<algo>.py`` starts
  from it and overrides only what the paper sets per dataset),
* the resolved, validated settings of a run (:func:`from_config`: every field read from
  the ConfigDict by its name, nested dataclasses from nested blocks, then the class's
  ``validate()``),
* the documentation of the fields (:func:`docs`, shown by ``--show_config``).

So a hyper-parameter appears once in code: a field of the dataclass.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import ml_collections


def setting(default: Any, doc: str) -> Any:
    """A settings field with ``default`` and a one-line ``doc``."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence settings (frozen dataclasses)")
    return dataclasses.field(default=default, metadata={"doc": doc})


def group(cls: type, doc: str) -> Any:
    """A nested settings block (a dataclass field whose type is ``cls``)."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value


def _convert(value: Any, kind: Any, path: str) -> Any:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{path} must be a boolean, got {value!r}")
            return value.lower() in ("true", "1")
        return bool(value)
    if kind in (int, float, str):
        try:
            out = kind(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} must be {kind.__name__}, got {value!r}") from e
        if kind is int and isinstance(value, float) and value != out:
            raise ValueError(f"{path} must be an integer, got {value!r}")
        return out
    return _to_tuple(value)


def from_config(cls: type, config: Any, path: str = "") -> Any:
    """Instance of settings dataclass ``cls`` read from ``config`` by field name.

    Fields absent from ``config`` keep their declared default; nested dataclass fields
    read the nested block of the same name. ``validate()`` of every (nested) instance
    runs last.

    Raises:
      ValueError: a value of the wrong type, or what ``validate()`` raises.
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        full = f"{path}{f.name}"
        kind = hints[f.name]
        present = config is not None and f.name in config
        if dataclasses.is_dataclass(kind):
            values[f.name] = from_config(kind, config[f.name] if present else None, full + ".")
        elif present:
            values[f.name] = _convert(config[f.name], kind, full)
    out = cls(**values)
    validate = getattr(out, "validate", None)
    if validate is not None:
        validate()
    return out


def to_config(cls: type) -> ml_collections.ConfigDict:
    """The defaults of settings dataclass ``cls`` as a ConfigDict (nested blocks too)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = to_config(hints[f.name])
        else:
            out[f.name] = f.default
    return ml_collections.ConfigDict(out)


def field_doc(cls: type, name: str) -> str:
    """The doc of field ``name``: from the nearest class in ``cls``'s MRO that declared
    it with :func:`setting` (a subclass may change a default with a bare
    ``name: type = value`` and keep the doc)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("doc"):
            return f.metadata["doc"]
    return ""


def docs(cls: type, prefix: str = "") -> dict[str, str]:
    """``{dotted field path: doc}`` of settings dataclass ``cls``."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out[prefix + f.name] = field_doc(cls, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(docs(hints[f.name], prefix + f.name + "."))
    return out


def check_choice(path: str, value: str, valid: tuple[str, ...]) -> None:
    """ValueError unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ValueError(f"unknown {path} {value!r}; valid: {', '.join(valid)}")


def check_positive(**values: float) -> None:
    """ValueError naming every value that is not > 0."""
    bad = [f"{k}={v}" for k, v in values.items() if not v > 0]
    if bad:
        raise ValueError(f"these settings must be > 0: {', '.join(bad)}")


__all__ = ["check_choice", "check_positive", "docs", "field_doc", "from_config", "group",
           "setting", "to_config"]
