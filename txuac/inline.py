"""``inline_callbacks``: Twisted's ``inlineCallbacks`` for modules that mypyc compiles.

``inlineCallbacks`` accepts only a ``types.GeneratorType``, and the generators of compiled
functions are objects of their own. This module stays interpreted, and its own generator
drives the compiled one with ``yield from`` (send, throw and the return value pass
through), so a compiled method may be written as an inline-callbacks generator too.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Generator

from twisted.internet import defer


def _delegate(steps: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    return (yield from steps)


_run = defer.inlineCallbacks(_delegate)


def inline_callbacks(function: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., defer.Deferred]:
    """``defer.inlineCallbacks(function)``, whether ``function`` is compiled or not."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> defer.Deferred:
        return _run(function(*args, **kwargs))

    return run
