"""The benchmark cases: formula, data, factor columns and which peers run on each.

Pure Python on purpose (no numpy, no pandas): run.py imports it, and run.py must stay
small in memory, since a child started with vfork inherits its parent's peak RSS
(see README.md, "How memory is measured").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SHARED_INSTEVAL = Path("/work/shared/data/InstEval.csv")

SYSTEMS = ("lmmfast", "mixedlm", "lme4", "statsmodels")


@dataclass(frozen=True)
class Case:
    """One model on one data set.

    groups: random-effect grouping columns (strings in a DataFrame, factors in R,
    int32 codes in the "from arrays" fit); factors: fixed-effect columns that are
    categorical (strings / factors everywhere).  skip: systems not run by default
    (run with --no-skip); never: systems that cannot express the model at all.  issue8:
    one of issue 8's speed targets (run alone with --new); load_peers: under --load, the
    peers run two at once too (False for cases where one peer fit takes minutes: there
    only lmmfast runs under load).
    """

    name: str
    formula: str
    groups: tuple[str, ...]
    source: str  # "dataset:<name>", "csv:<path>", "slope:n,groups", "crossed:n,nu,nv",
    # "kb07:nsubj,nitem", "fixedfactor:n,ng,nh" or "rdata:<package>:<name>"
    factors: tuple[str, ...] = ()
    reml: bool = True
    quick: bool = False
    skip: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    timeouts: dict = field(default_factory=dict)  # system -> seconds for its subprocess
    note: str = ""
    issue8: bool = False
    load_peers: bool = True

    @property
    def parquet(self) -> Path:
        return DATA / f"{self.name}.parquet"

    @property
    def csv(self) -> Path:
        if self.source.startswith("csv:"):
            return DATA / Path(self.source[4:]).name
        return DATA / f"{self.name}.csv"


CASES: tuple[Case, ...] = (
    Case(
        "sleepstudy",
        "Reaction ~ Days + (Days|Subject)",
        ("Subject",),
        "dataset:sleepstudy",
        quick=True,
        issue8=True,
        note="lme4's sleepstudy: 180 rows, 18 subjects, correlated intercept and slope",
    ),
    Case(
        "insteval",
        "y ~ service + (1|s) + (1|d) + (1|dept)",
        ("s", "d", "dept"),
        "csv:InstEval.csv",
        factors=("service",),
        quick=True,
        never=("statsmodels",),
        issue8=True,
        note="lme4's InstEval: 73,421 ratings, crossed students (2,972) x lecturers (1,128) "
        "x departments (14)",
    ),
    Case(
        "slope_1m",
        "y ~ x + (x|g)",
        ("g",),
        "slope:1000000,10000",
        timeouts={"statsmodels": 90},
        note="simulated: 1M rows, 10k groups, correlated intercept and slope",
    ),
    Case(
        "slope_10m",
        "y ~ x + (x|g)",
        ("g",),
        "slope:10000000,100000",
        skip=("lme4", "statsmodels"),
        note="simulated: 10M rows, 100k groups, correlated intercept and slope",
    ),
    Case(
        "crossed_100k",
        "y ~ x + (1|u) + (1|v)",
        ("u", "v"),
        "crossed:100000,5000,500",
        quick=True,
        never=("statsmodels",),
        note="simulated: 100k rows, crossed intercepts 5000 x 500",
    ),
    Case(
        "crossed_1m",
        "y ~ x + (1|u) + (1|v)",
        ("u", "v"),
        "crossed:1000000,20000,2000",
        never=("statsmodels",),
        issue8=True,
        load_peers=False,
        note="simulated: 1M rows, crossed intercepts 20000 x 2000",
    ),
)

KB07 = "rt ~ 1 + s*p*l + (1+s+p+l|subj) + (1+s+p+l|item)"
_MAXIMAL = "maximal model, 2 x 4 correlated random effects (20 theta)"


def _kb07(name: str, source: str, reml: bool, note: str, **kw) -> Case:
    """The kb07-shaped maximal model (crossed subjects and items; no statsmodels)."""
    kw = dict(never=("statsmodels",), issue8=True, **kw)
    return Case(name, KB07, ("subj", "item"), source, reml=reml, note=note, **kw)


CASES += (
    _kb07(
        "kb07_ml",
        "kb07:56,32",
        False,
        f"simulated kb07 design: 56 subjects x 32 items, 1,792 rows; {_MAXIMAL}; ML",
    ),
    _kb07("kb07_reml", "kb07:56,32", True, "the same data and model, REML"),
    _kb07(
        "kb07_300x200_ml",
        "kb07:300,200",
        False,
        f"the kb07 design with 300 subjects x 200 items, 60,000 rows; {_MAXIMAL}; ML",
        load_peers=False,
        timeouts={"lmmfast": 400, "lme4": 400, "mixedlm": 400},
    ),
    Case(
        "chem97",
        "score ~ gcsecnt + (1|school) + (1|lea)",
        ("school", "lea"),
        "rdata:mlmRev:Chem97",
        never=("statsmodels",),
        issue8=True,
        note="mlmRev's Chem97: 31,022 A-level scores, schools (2,410) and local education "
        "authorities (131)",
    ),
    Case(
        "fixed_500",
        "y ~ x + g + (1|h)",
        ("h",),
        "fixedfactor:20000,500,100",
        factors=("g",),
        issue8=True,
        note="simulated: 20k rows, a 500-level fixed factor g (p = 501), random intercept for "
        "h (100 levels)",
    ),
    Case(
        "fixed_2000",
        "y ~ x + g + (1|h)",
        ("h",),
        "fixedfactor:200000,2000,200",
        factors=("g",),
        issue8=True,
        load_peers=False,
        skip=("lme4", "mixedlm", "statsmodels"),
        note="simulated: 200k rows, a 2,000-level fixed factor g (p = 2,001), random intercept "
        "for h (200 levels)",
    ),
)

SCALING_N = (1_000_000, 2_000_000, 4_000_000)
SCALING_GROUPS = 10_000


def scaling_case(n: int) -> Case:
    """lmmfast-only (x|g) with 10k groups at n rows; 1M is the slope_1m data itself."""
    name = "slope_1m" if n == 1_000_000 else f"slope_{n // 1_000_000}m_10k"
    return Case(name, "y ~ x + (x|g)", ("g",), f"slope:{n},{SCALING_GROUPS}")


def by_name() -> dict[str, Case]:
    return {c.name: c for c in CASES}
