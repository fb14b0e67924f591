"""translate: LSTM neural machine translation (train, translate, benchmark).

The Python API in one line::

    from translate import Translator

    t = Translator.load("runs/multi30k")
    print(t.translate(["Ein Hund rennt über die Wiese."])[0].text)

``Translator`` and ``Translation`` are loaded on first use (module ``__getattr__``): a bare
``import translate`` loads neither torch nor any other heavy library, so a command-line
entry point can still set up the process (threads, allocator) before torch arrives.

Importing the package changes nothing outside it: the process-wide tuning the command-line
entry points apply (environment variables, allocator settings) lives in
:mod:`translate.tuning`, for library users to opt in to with
``translate.tuning.apply_process_tuning()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time __getattr__ loads them
    from translate.inference.translator import Translation, Translator

__all__ = ["Translation", "Translator"]

# Name -> the module that defines it, imported when the name is first asked for.
_LAZY = {
    "Translator": "translate.inference.translator",
    "Translation": "translate.inference.translator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'translate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
