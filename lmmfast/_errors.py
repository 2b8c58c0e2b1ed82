"""The typed errors lmmfast raises: one hierarchy under LMMError.

Every message names the problem and what to do about it.  Each class also derives
from the built-in exception a caller would naturally catch (ValueError, KeyError).
"""

from __future__ import annotations

import difflib


class LMMError(Exception):
    """Base class of every error lmmfast raises on purpose."""


class FormulaError(LMMError, ValueError):
    """The formula cannot be parsed or does not describe a linear mixed model."""

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.formula = formula
        self.position = position
        if formula is not None and position is not None:
            message = f"{message}\n  {formula}\n  {' ' * position}^"
        super().__init__(message)


class NotMixedModelError(FormulaError):
    """The formula has no random-effects term such as (1 | group)."""


class MissingColumnError(LMMError, KeyError):
    """A variable used in the formula (or weights/offset) is not a column of the data."""

    def __init__(self, name: str, columns):
        self.name = name
        close = difflib.get_close_matches(str(name), [str(c) for c in columns], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"column {name!r} is not in the data.{hint}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DataError(LMMError, ValueError):
    """The data cannot be used as given (wrong type, empty, non-finite, wrong length)."""


class GroupingError(DataError):
    """A grouping factor cannot carry random effects (too few or too many levels)."""


class NewLevelsError(DataError):
    """New data contain levels of a grouping factor that the fit has not seen."""


class ArgumentError(LMMError, ValueError):
    """An argument other than the data or formula has an invalid value (optimizer, ddf, ...)."""


class MemoryLimitError(LMMError, MemoryError):
    """The computation would need more memory than the machine has available."""


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its convergence criteria."""


class SingularFitWarning(UserWarning):
    """The fit is on the boundary of the parameter space (a variance is zero, a |corr| is 1)."""


class NeedsDataError(LMMError, ValueError):
    """A method needs the rows, which a loaded or unpickled fit does not keep: pass data=."""


class RefitWarning(UserWarning):
    """REML fits were refitted by maximum likelihood before a likelihood-ratio test."""


class DuplicateTermWarning(UserWarning):
    """A random-effects term appears twice: its variance is not identified."""


class ConvergenceError(LMMError, RuntimeError):
    """The optimizer did not reach an optimum and Control(check_conv="stop") was asked for."""
