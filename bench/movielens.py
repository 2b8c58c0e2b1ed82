"""A seeded generator of MovieLens-shaped ratings: distinct user-movie pairs, heavy-tailed
users, Zipf-like movie popularity (issue 12).

- users: Pareto(1.1) rating counts with minimum 20, capped at 0.39 x the number of movies;
  the part above 20 is scaled to give the target number of rows (Pareto(1.1) alone gives
  ~115 per user at full size, MovieLens-32M has 159);
- movies: popularity proportional to 1 / rank^0.9;
- each user rates *distinct* movies, drawn by popularity without replacement (draws with
  replacement, duplicates removed, topped up until the user's count is reached);
- rating = 3.5 + b_user + b_movie (+ a user x genre taste term) + noise, continuous.

full(): the MovieLens-32M shape (200,948 users x 84,432 movies, ~32M rows);
tenth(): 1/10 size (20,095 users x 8,443 movies, ~3.2M rows).  Deterministic in the seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIGMA_USER, SIGMA_MOVIE, SIGMA_GENRE, SIGMA = 0.45, 0.5, 0.3, 0.85
NGENRES = 20


def user_counts(n_users: int, n_movies: int, rng, target_rows: int | None = None) -> np.ndarray:
    """Pareto(1.1) counts, minimum 20, capped at 0.39 n_movies; with target_rows, the part
    above the minimum is scaled (k = 20 + s (X - 20), s by bisection) to give that total."""
    x = 20.0 * (1.0 - rng.random(n_users)) ** (-1.0 / 1.1)
    cap = int(0.39 * n_movies)

    def counts(s):
        return np.minimum(np.floor(20.0 + s * (x - 20.0)), cap).astype(np.int64)

    if target_rows is None:
        return counts(1.0)
    lo, hi = 0.0, 1.0
    while counts(hi).sum() < target_rows and hi < 1e6:
        hi *= 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if counts(mid).sum() < target_rows else (lo, mid)
    return counts(hi)


def distinct_pairs(counts: np.ndarray, n_movies: int, rng, chunk: int = 5_000):
    """(user, movie) codes, int32, each user with counts[user] distinct movies."""
    p = 1.0 / np.arange(1, n_movies + 1) ** 0.9
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    perm = rng.permutation(n_movies)  # movie code of each popularity rank
    users_out, movies_out = [], []
    for lo in range(0, len(counts), chunk):
        need = counts[lo : lo + chunk]
        active = np.arange(len(need))
        keys = np.zeros(0, np.int64)  # user * n_movies + rank, of the active users
        got = np.zeros(len(need), np.int64)
        rate = np.ones(len(need))
        while len(active):
            short = need[active] - got[active]
            draws = np.ceil(short / np.maximum(rate[active], 0.02) * 1.2 + 2).astype(np.int64)
            uu = np.repeat(active, draws)
            mm = np.searchsorted(cdf, rng.random(len(uu)))
            keys = np.unique(np.concatenate([keys, uu * n_movies + mm]))
            new = np.bincount(keys // n_movies, minlength=len(need))
            rate[active] = np.maximum(new[active] - got[active], 1) / draws
            got[active] = new[active]
            done = got >= need
            fin = done[keys // n_movies]
            _emit(keys[fin], need, n_movies, lo, perm, rng, users_out, movies_out)
            keys = keys[~fin]
            active = active[~done[active]]
    return np.concatenate(users_out), np.concatenate(movies_out)


def _emit(keys, need, n_movies, lo, perm, rng, users_out, movies_out) -> None:
    """Keep a random subset of need[u] pairs of each user u in keys."""
    u, m = keys // n_movies, keys % n_movies
    order = np.lexsort((rng.random(len(u)), u))
    u, m = u[order], m[order]
    first = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[first, len(u)])
    rank = np.arange(len(u)) - np.repeat(first, sizes)
    keep = rank < need[u]
    users_out.append((u[keep] + lo).astype(np.int32))
    movies_out.append(perm[m[keep]].astype(np.int32))


def ratings(n_users: int, n_movies: int, seed: int = 0, genres: bool = False,
            target_rows: int | None = None) -> pd.DataFrame:  # fmt: skip
    """Columns rating (float), user and movie (categoricals of integer codes)."""
    rng = np.random.default_rng(seed)
    counts = user_counts(n_users, n_movies, rng, target_rows)
    users, movies = distinct_pairs(counts, n_movies, rng)
    n = len(users)
    y = 3.5 + SIGMA_USER * rng.standard_normal(n_users)[users]
    y += SIGMA_MOVIE * rng.standard_normal(n_movies)[movies]
    if genres:
        genre = rng.integers(0, NGENRES, n_movies)
        taste = SIGMA_GENRE * rng.standard_normal((n_users, NGENRES))
        y += taste[users, genre[movies]]
    y += SIGMA * rng.standard_normal(n)
    return pd.DataFrame(
        {
            "rating": y,
            "user": pd.Categorical.from_codes(users, np.arange(n_users)),
            "movie": pd.Categorical.from_codes(movies, np.arange(n_movies)),
        }
    )


def full(seed: int = 0, genres: bool = False) -> pd.DataFrame:
    return ratings(200_948, 84_432, seed, genres, target_rows=32_000_204)


def tenth(seed: int = 0, genres: bool = False) -> pd.DataFrame:
    return ratings(20_095, 8_443, seed, genres, target_rows=3_200_000)
