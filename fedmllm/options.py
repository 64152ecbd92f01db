"""The one checker of user options: a value against its default, a table against its defaults.

Config keys, tuning-method options and strategy options all come from TOML (or ``key=value``
overrides parsed as TOML), so values arrive typed. They are checked here, one rule for all:

=================  =======================================================================
default            accepted value
=================  =======================================================================
``bool``           a bool only
``int``            an int (not a bool)
``float``          an int or a float (not a bool), finite; ints are converted to float
``str``            a str
``None``           ``None`` or a finite number (int or float, not a bool), kept as given
anything else      an instance of the default's type
=================  =======================================================================

NaN and ±Inf are rejected for every number (TOML spells them ``nan`` and ``inf``). Every failure
is a one-line `UserError` that names the key.

``owner`` reads as a noun phrase. For `check_value` and `check_type` it is what precedes the
key, so that ``f"{owner} {key!r}"`` names it: ``"config key"``, ``"tuning method 'lora' option"``.
For `resolve_options` it is who owns the table (``"tuning method 'lora'"``, ``"strategy
'fedprox'"``); the per-key checks then read ``"<owner> option '<key>'"``.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

from fedmllm.errors import UserError

_SCALARS = (bool, int, float, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(owner: str, key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{owner} {key!r} must be a finite number, got {value!r}")
    return value


def _wrong(owner: str, key: str, value: Any, expected: str) -> UserError:
    return UserError(f"{owner} {key!r} must be {expected}, got {type(value).__name__} {value!r}")


def check_type(owner: str, key: str, value: Any, typ: type) -> Any:
    """``value`` checked against the type ``typ`` (the table in the module docstring); returns
    it, an int converted to float where ``typ`` is float. Raises `UserError` naming ``key``."""
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = _is_number(value)
    else:
        ok = isinstance(value, typ)
    if not ok:
        raise _wrong(owner, key, value, typ.__name__)
    if typ is float:
        return _finite(owner, key, float(value))
    return value


def check_value(owner: str, key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (``None``: a number or None); returns
    the value to use (ints converted to float for a float default). Raises `UserError`."""
    if default is None:
        if value is not None and not _is_number(value):
            raise _wrong(owner, key, value, "a number or None")
        return _finite(owner, key, value)
    return check_type(owner, key, value, type(default))


def resolve_options(owner: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``, each given value checked by `check_value` against its
    default; keys in ``defaults`` order. A key not in ``defaults`` raises a `UserError` that
    names the valid options (in ``defaults`` order) and the closest match, if any."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise UserError(f"options of {owner} must be a table, got {given!r}")
    valid = list(defaults)
    unknown = [k for k in given if k not in defaults]
    if unknown:
        named = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), [str(v) for v in valid], n=1, cutoff=0.5)
            named.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
        raise UserError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(named)} for {owner}; "
                        f"valid options: {', '.join(map(str, valid)) or '(none)'}")
    out = dict(defaults)
    for k, v in given.items():
        out[k] = check_value(f"{owner} option", k, v, defaults[k])
    return out


__all__ = ["check_type", "check_value", "resolve_options"]
