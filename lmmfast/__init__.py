"""lmmfast: fast, exact linear mixed-effects models with lme4's formulas and lme4's numbers.

>>> import lmmfast
>>> fit = lmmfast.lmer("Reaction ~ Days + (Days | Subject)", lmmfast.datasets.load("sleepstudy"))
>>> print(fit.summary())  # doctest: +SKIP
"""

from . import datasets
from ._control import Control
from ._errors import (
    ArgumentError,
    ConvergenceError,
    ConvergenceWarning,
    DataError,
    DuplicateTermWarning,
    FormulaError,
    GroupingError,
    LMMError,
    MemoryLimitError,
    MissingColumnError,
    NeedsDataError,
    NewLevelsError,
    NotMixedModelError,
    RefitWarning,
    SingularFitWarning,
)
from ._inference.anova import anova
from ._inference.ranova import ranova
from ._lmer import RankDeficiencyWarning, lmer
from ._many import lmer_many
from ._many_result import ManyFits
from ._persist import PersistenceError, load
from ._result import LmerFit

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "lmer_many",
    "ManyFits",
    "anova",
    "ranova",
    "load",
    "PersistenceError",
    "LmerFit",
    "datasets",
    "LMMError",
    "ArgumentError",
    "MemoryLimitError",
    "FormulaError",
    "NotMixedModelError",
    "MissingColumnError",
    "DataError",
    "GroupingError",
    "NewLevelsError",
    "ConvergenceWarning",
    "SingularFitWarning",
    "RankDeficiencyWarning",
    "Control",
    "NeedsDataError",
    "ConvergenceError",
    "RefitWarning",
    "DuplicateTermWarning",
]
