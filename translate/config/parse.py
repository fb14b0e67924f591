"""How a config is read: typed conversion of YAML values and ``--set`` overrides.

Kept apart from :mod:`translate.config`, which declares what a config holds, so that the
sections a reader looks up are not buried under the generic parsing machinery.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import yaml

from translate.errors import TranslateError


class ConfigError(TranslateError, ValueError):
    """A configuration problem a person can fix; the message names the dotted key."""


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error is one line naming ``where``, the line and
    column (PyYAML's own message spans several lines and names no file)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark, found = err.problem_mark, err.problem or "syntax error"
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = ""
        if err.context and err.context_mark:
            cm = err.context_mark
            context = f" ({err.context} at line {cm.line + 1}, column {cm.column + 1})"
        raise ConfigError(f"{where}: {at}not valid YAML: {found}{context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(err).split())}") from None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (ints to floats)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected null, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return {_convert(k, key_tp, f"{path}.{k}"): _convert(v, value_tp, f"{path}.{k}")
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return build_section(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def build_section(cls: type, raw: dict, path: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking every key and value against its type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in hints:
            raise ConfigError(f"{dotted}: unknown key; expected one of {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], dotted)
    return cls(**kwargs)


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b[0].c=value`` to the raw mapping; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. training.lr=5e-4")
    key, _, text = assignment.partition("=")
    steps: list[str | int] = []
    for part in key.strip().split("."):
        name, *indices = part.replace("]", "").split("[")
        steps.append(name)
        try:
            steps.extend(int(i) for i in indices)
        except ValueError:
            raise ConfigError(f"--set {key}: list indices must be integers") from None
    node: Any = raw
    for i, step in enumerate(steps[:-1]):
        here = key if i == len(steps) - 2 else str(step)
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise ConfigError(f"--set {key}: no list item [{step}] in the config file")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {here} is not a section")
            default: Any = [] if isinstance(steps[i + 1], int) else {}
            node = node.setdefault(step, default)
    value = parse_yaml(text, f"--set {key}")
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads "5e-4" as a string
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"--set {key}: no list item [{last}] in the config file")
        node[last] = value
    elif not isinstance(node, dict):
        raise ConfigError(f"--set {key}: the parent of {last!r} is not a section")
    else:
        node[last] = value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
