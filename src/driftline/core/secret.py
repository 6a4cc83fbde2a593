"""A value that must never be printed: a password, a token, a key.

A configuration object is logged, shown in tracebacks, put in error
messages and pasted into bug reports. A plain ``str`` password travels
along into every one of them. :class:`Secret` holds the value and shows
``***`` in its place, whatever prints it (``repr``, ``str``, f-strings,
``%s``, dataclass reprs); the one way to the value is
:meth:`Secret.reveal`, called only where the value is handed to the
library that needs it.

It is deliberately *not* a ``str`` subclass: a ``str`` subclass still
leaks through ``"".join``, ``+``, ``json.dumps`` and ``str.format``, all of
which read the characters without calling ``__str__``. A ``Secret`` in one
of those places is a ``TypeError`` instead, which a test finds.

>>> s = Secret("hunter2")
>>> s, str(s), f"password={s}"
(Secret('***'), '***', 'password=***')
>>> s.reveal()
'hunter2'
>>> redact("login failed for hunter2", ["hunter2"])
'login failed for ***'
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any, NoReturn

MASK = "***"


class Secret:
    """A string that shows ``***`` instead of itself; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            # The value is not named: it may be the secret in the wrong type.
            raise TypeError(f"a Secret holds a str, not a {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The value itself: call this only where it is handed to the library that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        # Constant time: comparing secrets must not tell an attacker how much matched.
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value to wherever the pickle goes (a checkpoint,
        # a cache, another process's queue): refuse rather than leak.
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def redact(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """``text`` with every non-empty secret in ``secrets`` replaced by ``***``.

    For text that did not come from driftline (a library's exception
    message, a broker's answer), which might quote a value it was given.
    """
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    return text
