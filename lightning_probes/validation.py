"""Argument checks for the monitors' constructors (and the schedules and triggers), in one message style.

Every check raises ``ValueError("<name> must be <what>, got <value!r>.")`` — for a choice with a close match, followed
by ``" Did you mean '<match>'?"`` — and returns the value, so a constructor reads as a list of rules. ``what``
defaults to a phrase built from the constraint; a caller passes its own where the unit or the reason helps
(``what="a cosine level in (0, 1] (0.95 in the papers)"``). Booleans are never integers or numbers here: ``True``
as a sample count is a mistake, not a 1.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_name", "check_names", "check_real", "is_real"]


def is_real(value: Any) -> bool:
    """Whether ``value`` is a Python int or float, and not a bool.

    Example:
        >>> is_real(0.5), is_real(2), is_real(True), is_real("0.5")
        (True, True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse(name: str, what: str, value: Any, hint: str = "") -> ValueError:
    return ValueError(f"{name} must be {what}, got {value!r}.{hint}")


def check_int(name: str, value: Any, low: int | None = 1, *, what: str | None = None, optional: bool = False) -> Any:
    """``value`` must be an int (not a bool) ``>= low`` (any int if ``low`` is None); with ``optional``, None passes.

    Raises:
        ValueError: value is not an int >= low (nor None with optional).

    Example:
        >>> check_int("top_k", 6)
        6
        >>> check_int("top_k", 0)
        Traceback (most recent call last):
        ...
        ValueError: top_k must be a positive integer, got 0.
        >>> check_int("max_neurons", 2.5, low=2)
        Traceback (most recent call last):
        ...
        ValueError: max_neurons must be an integer >= 2, got 2.5.
        >>> check_int("max_units", None, optional=True) is None  # ``what`` may say "or None"
        True
    """
    if optional and value is None:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        if what is None:
            what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(low,
                                                                                                f"an integer >= {low}")
        raise _refuse(name, what, value)
    return value


@functools.lru_cache(maxsize=None)
def _interval(text: str) -> tuple[float, float, bool, bool]:
    """``"(0, 1]"`` -> (low, high, low closed, high closed); the ends may be ``inf`` / ``-inf``."""
    match = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([\])])", text)
    if match is None:
        raise ValueError(f"an interval looks like '(0, 1]' or '[0, inf)', got {text!r}.")
    opening, low, high, closing = match.groups()
    return float(low), float(high), opening == "[", closing == "]"


def check_real(name: str, value: Any, interval: str, *, what: str | None = None, optional: bool = False) -> Any:
    """``value`` must be an int or float (not a bool) inside ``interval``, written as in maths: ``"(0, 1]"``,
    ``"[0, inf)"`` (an open infinite end refuses inf), ``"(0, inf]"``. NaN lies in no interval. With ``optional``,
    None passes.

    Raises:
        ValueError: value is not a real number in the interval (nor None with optional), or the interval is malformed.

    Example:
        >>> check_real("tau", 0.05, "(0, 1)")
        0.05
        >>> check_real("power_threshold", float("nan"), "(0, 1]")
        Traceback (most recent call last):
        ...
        ValueError: power_threshold must be a number in (0, 1], got nan.
        >>> check_real("probe_l2", float("inf"), "[0, inf)", what="a finite number ≥ 0")
        Traceback (most recent call last):
        ...
        ValueError: probe_l2 must be a finite number ≥ 0, got inf.
    """
    if optional and value is None:
        return value
    low, high, low_closed, high_closed = _interval(interval)
    inside = is_real(value) and (value >= low if low_closed else value > low) and \
        (value <= high if high_closed else value < high)
    if not inside:  # NaN fails every comparison above
        raise _refuse(name, what or f"a number in {interval}", value)
    return value


def _alternatives(choices: Sequence[Any] | Mapping[Any, str]) -> str:
    """``'a', 'b' or 'c'``; a mapping's non-empty values describe their choice: ``'a' (the default)``."""
    notes = choices if isinstance(choices, Mapping) else {}
    words = [repr(c) + (f" ({notes[c]})" if notes.get(c) else "") for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_choice(name: str, value: Any, choices: Sequence[Any] | Mapping[Any, str], *, what: str | None = None) -> Any:
    """``value`` must be one of ``choices`` (a mapping describes each choice); a close miss gets "Did you mean".

    Raises:
        ValueError: value is not one of the choices (the message suggests the closest).

    Example:
        >>> check_choice("search", "beam", ("exact", "beam"))
        'beam'
        >>> check_choice("nc4_means", "currnet", ("previous", "current"))
        Traceback (most recent call last):
        ...
        ValueError: nc4_means must be 'previous' or 'current', got 'currnet'. Did you mean 'current'?
        >>> check_choice("stage_by", "norm_grow", {"norm_growth": "the amplitude blow-up", "relative_change": ""})
        ... # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: stage_by must be 'norm_growth' (the amplitude blow-up) or 'relative_change', got 'norm_grow'.
        Did you mean 'norm_growth'?
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value cannot be a key of a mapping of choices
        known = False
    if not known:
        words = [c for c in choices if isinstance(c, str)]
        close = get_close_matches(value, words, n=1) if isinstance(value, str) else []
        raise _refuse(name, what or _alternatives(choices), value, f" Did you mean {close[0]!r}?" if close else "")
    return value


def check_bool(name: str, value: Any, *, what: str = "True or False") -> bool:
    """``value`` must be a bool (not 0 / 1: a flag given a number is usually another argument's value).

    Raises:
        ValueError: value is not a bool.

    Example:
        >>> check_bool("center", 1)
        Traceback (most recent call last):
        ...
        ValueError: center must be True or False, got 1.
    """
    if not isinstance(value, bool):
        raise _refuse(name, what, value)
    return value


def check_name(name: str, value: Any, *, what: str, optional: bool = False) -> Any:
    """``value`` must be a non-empty string (a module name, a batch key); with ``optional``, None passes.

    Raises:
        ValueError: value is not a non-empty string (nor None with optional).

    Example:
        >>> check_name("head", "", what="the name of the final nn.Linear module, e.g. head='classifier'")
        Traceback (most recent call last):
        ...
        ValueError: head must be the name of the final nn.Linear module, e.g. head='classifier', got ''.
    """
    if optional and value is None:
        return value
    if not isinstance(value, str) or not value:
        raise _refuse(name, what, value)
    return value


def check_names(name: str, value: Any, *, example: str, allow_empty: bool = False) -> list[str]:
    """``value`` must be a list (not a string) of distinct non-empty strings, non-empty unless ``allow_empty``;
    returns it as a list. ``example`` shows a valid value in the message.

    Raises:
        ValueError: value is not a list of non-empty module names (empty only with allow_empty), or repeats a name.

    Example:
        >>> check_names("layers", ("a", "b"), example="['layer1', 'layer2']")
        ['a', 'b']
        >>> check_names("layers", "layer1", example="['layer1', 'layer2']")
        Traceback (most recent call last):
        ...
        ValueError: layers must be a non-empty list of module names, e.g. ['layer1', 'layer2'], got 'layer1'.
        >>> check_names("layers", ["a", "a"], example="['layer1', 'layer2']")
        Traceback (most recent call last):
        ...
        ValueError: layers must not repeat a name, got ['a', 'a'].
    """
    if isinstance(value, str) or not isinstance(value, Sequence) or (not value and not allow_empty) \
            or not all(isinstance(n, str) and n for n in value):
        kind = "a list" if allow_empty else "a non-empty list"
        raise _refuse(name, f"{kind} of module names, e.g. {example}", value)
    names = list(value)
    if len(set(names)) != len(names):
        raise ValueError(f"{name} must not repeat a name, got {names!r}.")
    return names

