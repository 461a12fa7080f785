"""Value pools: the committed lists every population is drawn from (SPEC section 1).

The pool files under ``biolab/data/pools/`` are the source of truth (regenerate or re-check them
with ``python -m biolab.data.make_pools``), so a population depends only on (pool files, N, seed),
never on the installed Faker version. Birth dates are not a file: they are generated here as
year 1900-2100 x month x day 1-31 (impossible dates such as "February 31" on purpose).

    pools = load_pools()
    pools.values("employer")[3]     # -> "Siemens"
    pools.baseline()                # -> no-knowledge attribute loss in nats (~6.785)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from biolab.data.templates import ATTRIBUTES

POOL_DIR = Path(__file__).parent / "pools"

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
YEARS = tuple(range(1900, 2101))  # 201 years
DAYS = tuple(range(1, 32))        # 31 days, every month

# attribute -> pool file (birth_date is generated, not read)
POOL_FILES = {
    "birth_city": "cities.txt",
    "current_city": "cities.txt",
    "university": "universities.txt",
    "major": "majors.txt",
    "employer": "companies.txt",
}


def render_date(index: int) -> str:
    """Date index in [0, 201*12*31) -> "March 16, 2042" (year-major, then month, then day)."""
    year, rest = divmod(index, len(MONTHS) * len(DAYS))
    month, day = divmod(rest, len(DAYS))
    return f"{MONTHS[month]} {DAYS[day]}, {YEARS[year]}"


def _read_pool(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"value pool missing: {path} (regenerate with python -m biolab.data.make_pools)")
    values = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(set(v.lower() for v in values)) != len(values):
        raise ValueError(f"value pool {path} contains duplicate values")
    return values


@dataclass(frozen=True)
class Pools:
    """All value lists. ``values(attr)`` gives the rendered strings of one attribute."""

    given_names: tuple[str, ...]
    surnames: tuple[str, ...]
    by_file: dict  # file name -> tuple of values

    @property
    def name_space(self) -> int:
        """Number of distinct full names (first x middle x last)."""
        return len(self.given_names) ** 2 * len(self.surnames)

    def size(self, attribute: str) -> int:
        if attribute == "birth_date":
            return len(YEARS) * len(MONTHS) * len(DAYS)
        return len(self.by_file[POOL_FILES[attribute]])

    def values(self, attribute: str) -> tuple[str, ...]:
        """Every value of an attribute as text (74,772 rendered dates for birth_date)."""
        if attribute == "birth_date":
            return tuple(render_date(i) for i in range(self.size("birth_date")))
        return self.by_file[POOL_FILES[attribute]]

    def baseline(self, attributes=ATTRIBUTES) -> float:
        """No-knowledge attribute loss: mean over attributes of ln |V_a| (SPEC section 5)."""
        return sum(self.baseline_per_attribute(attributes).values()) / len(attributes)

    def baseline_per_attribute(self, attributes=ATTRIBUTES) -> dict[str, float]:
        return {a: math.log(self.size(a)) for a in attributes}


@lru_cache(maxsize=4)
def load_pools(pool_dir: str | Path = POOL_DIR) -> Pools:
    """Read the committed pool files (cached per directory)."""
    pool_dir = Path(pool_dir)
    files = sorted(set(POOL_FILES.values()))
    return Pools(
        given_names=_read_pool(pool_dir / "given_names.txt"),
        surnames=_read_pool(pool_dir / "surnames.txt"),
        by_file={f: _read_pool(pool_dir / f) for f in files},
    )
