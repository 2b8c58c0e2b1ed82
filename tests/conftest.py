"""Shared fixtures: the lme4 reference file and the data it was made from."""

import json
from pathlib import Path

import pandas as pd
import pytest

import lmmfast

REFERENCE = Path(__file__).parent / "reference"
# refs_lme4.R makes these columns factors; strings give them the same meaning here
FACTOR_COLUMNS = ["Beach", "Subject", "s", "d", "dept", "g", "u", "v", "recipe", "replicate"]


def load_reference_data(name: str) -> pd.DataFrame:
    """A data set as refs_lme4.R reads it (integer grouping columns become factors)."""
    df = lmmfast.datasets.load(name)
    for v in FACTOR_COLUMNS:
        if v in df and df[v].dtype.kind in "iu":
            df[v] = df[v].astype(str)
    return df


def _refs():
    with open(REFERENCE / "refs_lme4.json") as fh:
        return json.load(fh)["models"]


REFS = _refs()


@pytest.fixture(scope="session")
def refs():
    return REFS
