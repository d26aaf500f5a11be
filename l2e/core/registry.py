"""Plain-dict registries filled by a decorator (the peft ``mapping.py`` pattern).

Configs hold names, never classes: ``POOLING["mean"]``, ``LOSSES["infonce"]``.
"""
from __future__ import annotations

from typing import Callable, Dict, TypeVar

F = TypeVar("F", bound=Callable)


def make_register(registry: Dict[str, Callable], kind: str) -> Callable[[str], Callable[[F], F]]:
    """Return a ``@register("name")`` decorator that fills ``registry``; a duplicate name raises."""

    def register(name: str) -> Callable[[F], F]:
        def wrap(fn: F) -> F:
            if name in registry:
                raise ValueError(f"{kind} {name!r} is already registered ({registry[name].__module__})")
            registry[name] = fn
            return fn

        return wrap

    return register


def lookup(registry: Dict[str, Callable], kind: str, name: str) -> Callable:
    """``registry[name]`` with an error that lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}") from None
