"""Sparse probes on CETT features (H-Neurons, SPEC 9.3): L1 logistic regression, random neuron sets, a confidence
baseline, AUROC with bootstrap intervals over people.

    probe, sweep = select_l1_probe(train, val, silenced_accuracy, n_grid=10)   # a LinearProbe, one row per C
    probe.h_neurons                                    # features with a positive weight: the H-neurons
    auroc(probe.decision(test.X), test.y)
    random_set_aurocs(train, test, k=len(probe.h_neurons), n_sets=10, seed=0)
    refit_auroc(train, test, columns)                  # an L2 probe on given columns (H-neurons, confidence ...)

Features are standardised on the training set. C runs on a log grid from just above sklearn's l1_min_c (below it
every weight is zero) to 1000 times that, and is chosen by held-out accuracy plus the model's accuracy with the
probe's H-neurons silenced (silenced_accuracy(neurons) -> float, from the caller; the paper's criterion).
Needs scikit-learn (the `probes` extra); L1 is asked for with l1_ratio=1 (penalty= is deprecated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

GRID_SPAN = 1000.0     # largest C / smallest C
GRID_START = 1.2       # the smallest C, in units of l1_min_c


@dataclass
class Data:
    X: np.ndarray        # [n, features]
    y: np.ndarray        # [n] 1 = hallucinated, 0 = faithful
    people: np.ndarray   # [n] person of each row (bootstrap unit)


@dataclass
class LinearProbe:
    """A fitted standardised logistic probe, kept as plain lists (JSON) over its non-zero features only."""

    indices: list[int]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    C: float | None = None

    def decision(self, X: np.ndarray) -> np.ndarray:
        """X [n, features] -> [n] logit of "hallucinated"."""
        if not self.indices:
            return np.full(len(X), self.intercept)
        columns = X[:, self.indices]
        return (columns - np.asarray(self.mean)) / np.asarray(self.scale) @ np.asarray(self.coef) + self.intercept

    @property
    def h_neurons(self) -> list[int]:
        return [i for i, c in zip(self.indices, self.coef) if c > 0]

    def to_json(self) -> dict:
        return asdict(self)


def fit_logistic(data: Data, columns=None, C: float = 1.0, l1: bool = False) -> LinearProbe:
    """A logistic probe on standardised columns (all by default): L1 (liblinear) or L2 (lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    columns = np.arange(data.X.shape[1]) if columns is None else np.asarray(columns, dtype=int)
    scaler = StandardScaler().fit(data.X[:, columns])
    if l1:
        model = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=1000)
    else:
        model = LogisticRegression(C=C, max_iter=1000)
    model.fit(scaler.transform(data.X[:, columns]), data.y)
    keep = np.flatnonzero(model.coef_[0])
    return LinearProbe(indices=columns[keep].tolist(), mean=scaler.mean_[keep].tolist(), scale=scaler.scale_[keep].tolist(),
                       coef=model.coef_[0, keep].tolist(), intercept=float(model.intercept_[0]), C=float(C))


def auroc(scores: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else None


def accuracy(scores: np.ndarray, y: np.ndarray) -> float | None:
    return float(((scores > 0) == (y == 1)).mean()) if len(y) else None


def c_grid(data: Data, n_grid: int) -> np.ndarray:
    """[n_grid] C values, log-spaced from just above the smallest useful C (all weights zero below it)."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import l1_min_c

    smallest = l1_min_c(StandardScaler().fit_transform(data.X), data.y, loss="log")
    return np.geomspace(GRID_START * smallest, GRID_START * smallest * GRID_SPAN, n_grid)


def select_l1_probe(train: Data, val: Data, silenced_accuracy: Callable[[list[int]], float] | None = None,
                    n_grid: int = 10) -> tuple[LinearProbe, list[dict]]:
    """The L1 probe whose C maximises val accuracy + silenced_accuracy(its H-neurons) (ties: the smaller C)."""
    sweep, best, best_score = [], None, -np.inf
    cache: dict[tuple, float] = {}
    for C in c_grid(train, n_grid):
        probe = fit_logistic(train, C=float(C), l1=True)
        key = tuple(probe.h_neurons)
        if silenced_accuracy is not None and key not in cache:
            cache[key] = silenced_accuracy(list(key))
        scores = probe.decision(val.X)
        row = {"C": float(C), "n_nonzero": len(probe.indices), "n_h_neurons": len(key),
               "val_accuracy": accuracy(scores, val.y), "val_auroc": auroc(scores, val.y),
               "silenced_accuracy": cache.get(key)}
        row["score"] = row["val_accuracy"] + (row["silenced_accuracy"] or 0.0)
        sweep.append(row)
        if row["score"] > best_score:
            best, best_score = probe, row["score"]
    return best, sweep


def refit_auroc(train: Data, test: Data, columns) -> float | None:
    """AUROC on test of an L2 logistic probe fitted on the given columns (None without columns)."""
    if len(columns) == 0:
        return None
    return auroc(fit_logistic(train, columns).decision(test.X), test.y)


def random_set_aurocs(train: Data, test: Data, k: int, n_sets: int, seed: int = 0) -> list[float]:
    """AUROCs of L2 probes on n_sets random sets of k features each (the paper's random-neuron baseline)."""
    rng = np.random.default_rng([seed, 13])
    return [refit_auroc(train, test, rng.choice(train.X.shape[1], size=k, replace=False)) for _ in range(n_sets)] if k else []


def bootstrap_auroc(scores: np.ndarray, data: Data, n_boot: int = 200, seed: int = 0) -> list[float] | None:
    """[2.5%, 97.5%] interval of the AUROC, resampling people (all rows of a drawn person)."""
    people = np.unique(data.people)
    if auroc(scores, data.y) is None or len(people) < 2:
        return None
    rng = np.random.default_rng([seed, 17])
    rows_of = {p: np.flatnonzero(data.people == p) for p in people}
    values = []
    for _ in range(n_boot):
        rows = np.concatenate([rows_of[p] for p in rng.choice(people, size=len(people))])
        value = auroc(scores[rows], data.y[rows])
        if value is not None:
            values.append(value)
    return np.percentile(values, [2.5, 97.5]).tolist() if values else None
