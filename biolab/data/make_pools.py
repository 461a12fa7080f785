"""Regenerate and check the committed value pools (SPEC section 1).

    python -m biolab.data.make_pools           # rebuild every pool file, then check them
    python -m biolab.data.make_pools --check   # only check (exit 1 and list the problems)

The files in ``biolab/data/pools/`` are the source of truth: a population depends only on them,
never on the installed Faker version. Sources:
- given names (900) and surnames (1,000): Faker's English-language person providers (needs
  ``pip install -e ".[pools]"``), most frequent first where Faker has weights, single alphabetic
  words only, no name both a given name and a surname;
- cities (800), universities (200), majors (100), companies (500): Faker only invents these, so
  they come from the curated lists in ``pools/curated/`` (real names, ASCII), in order, cleaned.
Cleaning keeps the first of any case-insensitive duplicate and drops a value whose word tokens
are a prefix of an earlier value's (or the reverse), so that every value's tokens identify it and
the no-knowledge baseline ln |V| is exact.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

POOL_DIR = Path(__file__).parent / "pools"
CURATED_DIR = POOL_DIR / "curated"
SIZES = {"given_names.txt": 900, "surnames.txt": 1000, "cities.txt": 800, "universities.txt": 200,
         "majors.txt": 100, "companies.txt": 500}
NAME_PATTERN = re.compile(r"^[A-Z][a-z]+$")
VALUE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z&' -]*[A-Za-z]$")
NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "en_PH", "en_TH")
TOKEN = re.compile(r"\w+|[^\w\s]")


def _ordered(names) -> list[str]:
    """Faker lists are tuples or {name: weight} dicts: most frequent first when weighted."""
    if isinstance(names, dict):
        return sorted(names, key=lambda n: -names[n])
    return list(names)


def faker_names(kind: str) -> list[str]:
    """Given names ("first") or surnames ("last") from Faker's English locales, de-duplicated."""
    out, seen = [], set()
    attributes = ("first_names", "first_names_female", "first_names_male") if kind == "first" else ("last_names",)
    for locale in NAME_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ModuleNotFoundError:
            continue
        for attribute in attributes:
            for name in _ordered(getattr(provider, attribute, ())):
                if NAME_PATTERN.match(name) and name.lower() not in seen:
                    seen.add(name.lower())
                    out.append(name)
    return out


def _is_prefix(a: list[str], b: list[str]) -> bool:
    return len(a) < len(b) and b[:len(a)] == a


def clean_values(values: list[str]) -> list[str]:
    """Normalise spaces, drop invalid, duplicate and token-prefix values (keeping the earlier one)."""
    kept, kept_tokens, seen = [], [], set()
    for value in values:
        value = " ".join(value.split())
        if not value or not value.isascii() or not VALUE_PATTERN.match(value) or value.lower() in seen:
            continue
        tokens = TOKEN.findall(value)
        if any(_is_prefix(tokens, t) or _is_prefix(t, tokens) for t in kept_tokens):
            continue
        seen.add(value.lower())
        kept.append(value)
        kept_tokens.append(tokens)
    return kept


def build_pools(pool_dir: Path = POOL_DIR) -> None:
    given = faker_names("first")[:SIZES["given_names.txt"]]
    given_lower = {g.lower() for g in given}
    surnames = [s for s in faker_names("last") if s.lower() not in given_lower][:SIZES["surnames.txt"]]
    pools = {"given_names.txt": given, "surnames.txt": surnames}
    for name in ("cities.txt", "universities.txt", "majors.txt", "companies.txt"):
        curated = (CURATED_DIR / name).read_text(encoding="utf-8").splitlines()
        pools[name] = clean_values(curated)[:SIZES[name]]
    for name, values in pools.items():
        if len(values) < SIZES[name]:
            raise SystemExit(f"{name}: only {len(values)} usable values, need {SIZES[name]}")
        (pool_dir / name).write_text("\n".join(values) + "\n", encoding="utf-8")
        print(f"wrote {pool_dir / name} ({len(values)} values)")


def validate_pools(pool_dir: str | Path = POOL_DIR) -> list[str]:
    """Problems with the pool files (empty list when every rule holds)."""
    pool_dir, problems, pools = Path(pool_dir), [], {}
    for name, size in SIZES.items():
        path = pool_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        values = path.read_text(encoding="utf-8").splitlines()
        pools[name] = values
        if len(values) != size:
            problems.append(f"{name}: {len(values)} values, need {size}")
        lowered = [v.lower() for v in values]
        duplicates = sorted({v for v in lowered if lowered.count(v) > 1})
        if duplicates:
            problems.append(f"{name}: duplicates {duplicates[:5]}")
        pattern = NAME_PATTERN if name in ("given_names.txt", "surnames.txt") else VALUE_PATTERN
        bad = [v for v in values if not (v.isascii() and pattern.match(v))]
        if bad:
            problems.append(f"{name}: invalid values {bad[:5]}")
        if name not in ("given_names.txt", "surnames.txt") and clean_values(values) != values:
            dropped = sorted(set(values) - set(clean_values(values)))
            problems.append(f"{name}: values that are token prefixes of others {dropped[:5]}")
    if "given_names.txt" in pools and "surnames.txt" in pools:
        both = {v.lower() for v in pools["given_names.txt"]} & {v.lower() for v in pools["surnames.txt"]}
        if both:
            problems.append(f"names that are both given names and surnames: {sorted(both)[:5]}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild or check biolab's value pools.")
    parser.add_argument("--check", action="store_true", help="only validate the committed files")
    args = parser.parse_args(argv)
    if not args.check:
        build_pools()
    problems = validate_pools()
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if not problems:
        print("pools OK: " + ", ".join(f"{n} {s}" for n, s in SIZES.items()))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
