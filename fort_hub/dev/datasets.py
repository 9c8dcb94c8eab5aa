"""Deterministic sample datasets shaped like FORT's releases, written as Parquet.

Development and demo data only. Two tables:

- ``url_shares``: one row per (URL, month, country, age bracket, gender) breakdown with share,
  view and reaction counts, shaped like the Condor "URLs" dataset Facebook released to
  researchers. As there, every count has zero-mean Gaussian noise added (differential privacy),
  so a small count can come out negative; ``NOISE_SD`` is the noise scale of each count, and
  the policies in ``fort_hub/dev/data`` declare its square as ``datasets[].noise``.
  ``fact_check_rating`` is the third-party fact-checkers' rating of the URL, null when unrated.
- ``ads_targeting``: one row per ad, shaped like the Ad Targeting dataset: ad id, page,
  targeting criteria, impressions bucket, spend range and delivery dates.

The same seed and row count always give byte-identical Parquet files (no clock, no randomness
outside the seeded generator)::

    python -m fort_hub.dev.datasets .fort-demo/data          # writes both, prints what it did
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

URL_SHARES_ROWS = 1_000_000
ADS_TARGETING_ROWS = 200_000
SEED = 20180531  # any fixed value; the day Condor's first data sharing was announced

COUNTRIES = ["US", "BR", "IN", "DE", "FR", "GB", "MX", "PH", "ID", "NG", "KE", "IT", "ES", "CA"]
COUNTRY_WEIGHTS = [22, 12, 14, 6, 6, 7, 6, 6, 6, 4, 3, 3, 3, 2]
AGE_BRACKETS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
AGE_WEIGHTS = [16, 24, 20, 16, 13, 11]
GENDERS = ["female", "male", "other"]
GENDER_WEIGHTS = [48, 48, 4]
RATINGS = ["false", "partly false", "missing context", "altered", "satire", "true"]
RATING_WEIGHTS = [35, 25, 15, 8, 7, 10]
TLDS = [".com", ".org", ".net", ".co.uk", ".com.br", ".in", ".de", ".news"]
WORDS = [
    "daily",
    "news",
    "times",
    "post",
    "herald",
    "world",
    "report",
    "tribune",
    "voice",
    "today",
    "planet",
    "health",
    "science",
    "money",
    "sport",
    "truth",
    "viral",
    "politics",
    "local",
    "global",
    "review",
    "insider",
    "wire",
    "digest",
]
#: Gaussian noise standard deviation per count, as in the URLs dataset's documentation
NOISE_SD = {"shares": 14.0, "views": 2228.0, "reactions": 22.0}

INTERESTS = [
    "politics",
    "news",
    "environment",
    "football",
    "cooking",
    "travel",
    "fitness",
    "fashion",
    "music",
    "gaming",
    "parenting",
    "technology",
    "finance",
    "religion",
    "education",
    "health",
    "cars",
    "movies",
    "pets",
    "gardening",
]
IMPRESSION_BUCKETS = [(0, 999), (1000, 4999), (5000, 9999), (10000, 49999), (50000, 99999)]
IMPRESSION_BUCKETS += [(100000, 199999), (200000, 499999), (500000, 999999), (1000000, None)]
SPEND_RANGES = [(0, 99), (100, 499), (500, 999), (1000, 4999), (5000, 9999), (10000, 49999)]
SPEND_RANGES += [(50000, 99999), (100000, None)]


def _choice(rng: np.random.Generator, n: int, weights: Sequence[float]) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int32)


def _dictionary(indices: np.ndarray, values: Sequence[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(values))


def _domains(rng: np.random.Generator, n: int) -> list[str]:
    a = rng.integers(0, len(WORDS), n)
    b = rng.integers(0, len(WORDS), n)
    t = rng.integers(0, len(TLDS), n)
    return [
        f"{WORDS[x]}{WORDS[y]}{i}{TLDS[z]}" for i, (x, y, z) in enumerate(zip(a, b, t, strict=True))
    ]


def url_shares_table(rows: int = URL_SHARES_ROWS, seed: int = SEED) -> pa.Table:
    """The ``url_shares`` table as an Arrow table (deterministic for a given rows and seed)."""
    rng = np.random.default_rng(seed)
    n_domains = max(10, rows // 500)
    n_urls = max(20, rows // 20)
    domains = _domains(rng, n_domains)
    # a few domains get most of the URLs, as on the real web (Zipf-like)
    url_domain = np.minimum(rng.zipf(1.6, n_urls) - 1, n_domains - 1)
    url_ids = rng.integers(10**9, 10**10, n_urls)
    urls = [
        f"https://{domains[d]}/{WORDS[u % len(WORDS)]}/{u:x}"
        for d, u in zip(url_domain, url_ids, strict=True)
    ]
    rated = rng.random(n_urls) < 0.04
    url_rating = np.where(rated, _choice(rng, n_urls, RATING_WEIGHTS), -1)

    # each row: a URL (popular URLs have more breakdown rows), a month, a demographic cell
    url_idx = np.minimum(rng.zipf(1.3, rows) - 1, n_urls - 1)
    url_idx = (url_idx * 7919 + rng.integers(0, 3, rows)) % n_urls  # spread the head a little
    months = np.array(
        [dt.date(2017 + m // 12, 1 + m % 12, 1) for m in range(48)], dtype="datetime64[D]"
    )
    month = months[rng.integers(0, len(months), rows)]
    popularity = rng.lognormal(3.0, 1.4, rows)
    true_views = np.floor(popularity * rng.uniform(30, 120, rows))
    true_shares = np.floor(popularity * rng.uniform(0.2, 1.0, rows))
    true_reactions = np.floor(popularity * rng.uniform(0.5, 2.5, rows))

    def noisy(true: np.ndarray, sd: float) -> np.ndarray:
        return np.rint(true + rng.normal(0.0, sd, rows)).astype(np.int64)

    rating_idx = url_rating[url_idx]
    rating = pa.DictionaryArray.from_arrays(
        pa.array(rating_idx, pa.int32(), mask=rating_idx < 0), pa.array(RATINGS)
    )
    return pa.table(
        {
            "url": pa.array(urls).take(pa.array(url_idx)),
            "domain": pa.array(domains).take(pa.array(url_domain[url_idx])),
            "month": pa.array(month, pa.date32()),
            "country": _dictionary(_choice(rng, rows, COUNTRY_WEIGHTS), COUNTRIES),
            "age_bracket": _dictionary(_choice(rng, rows, AGE_WEIGHTS), AGE_BRACKETS),
            "gender": _dictionary(_choice(rng, rows, GENDER_WEIGHTS), GENDERS),
            "shares": noisy(true_shares, NOISE_SD["shares"]),
            "views": noisy(true_views, NOISE_SD["views"]),
            "reactions": noisy(true_reactions, NOISE_SD["reactions"]),
            "fact_check_rating": rating,
        }
    )


def _ranges(idx: np.ndarray, ranges: list[tuple[int, int | None]]):
    lower = pa.array([r[0] for r in ranges], pa.int64()).take(pa.array(idx))
    upper = pa.array([r[1] for r in ranges], pa.int64()).take(pa.array(idx))
    return lower, upper


def ads_targeting_table(rows: int = ADS_TARGETING_ROWS, seed: int = SEED + 1) -> pa.Table:
    """The ``ads_targeting`` table as an Arrow table (deterministic for a given rows and seed)."""
    rng = np.random.default_rng(seed)
    n_pages = max(10, rows // 40)
    page_ids = rng.integers(10**14, 10**15, n_pages)
    page_names = [
        f"{WORDS[i % len(WORDS)].title()} {WORDS[(i * 7) % len(WORDS)]} {i}" for i in range(n_pages)
    ]
    page_idx = np.minimum(rng.zipf(1.4, rows) - 1, n_pages - 1)
    age_min = rng.choice([13, 18, 21, 25, 35, 45], rows)
    age_max = np.minimum(age_min + rng.choice([10, 20, 30, 52], rows), 65)
    n_interests = rng.integers(0, 4, rows)
    picks = rng.integers(0, len(INTERESTS), (rows, 3))
    interests = [
        ",".join(sorted({INTERESTS[j] for j in picks[i, :k]})) for i, k in enumerate(n_interests)
    ]
    n_countries = rng.integers(1, 4, rows)
    cpicks = _choice(rng, rows * 3, COUNTRY_WEIGHTS).reshape(rows, 3)
    locations = [
        ",".join(sorted({COUNTRIES[j] for j in cpicks[i, :k]})) for i, k in enumerate(n_countries)
    ]
    start_day = rng.integers(0, 4 * 365, rows)
    start = np.datetime64("2018-05-01") + start_day.astype("timedelta64[D]")
    stop = start + rng.integers(1, 60, rows).astype("timedelta64[D]")
    imp_idx = np.minimum(rng.geometric(0.35, rows) - 1, len(IMPRESSION_BUCKETS) - 1)
    spend_idx = np.minimum(
        np.maximum(imp_idx - 1 + rng.integers(-1, 2, rows), 0), len(SPEND_RANGES) - 1
    )
    imp_lo, imp_hi = _ranges(imp_idx, IMPRESSION_BUCKETS)
    spend_lo, spend_hi = _ranges(spend_idx, SPEND_RANGES)
    ad_ids = rng.permutation(rows).astype(np.int64) + 23840000000000000
    return pa.table(
        {
            "ad_id": pa.array([str(a) for a in ad_ids]),
            "page_id": pa.array(page_ids[page_idx]),
            "page_name": pa.array(page_names).take(pa.array(page_idx)),
            "targeting_age_min": pa.array(age_min, pa.int16()),
            "targeting_age_max": pa.array(age_max, pa.int16()),
            "targeting_gender": _dictionary(
                _choice(rng, rows, [70, 15, 15]), ["all", "female", "male"]
            ),
            "targeting_locations": pa.array(locations),
            "targeting_interests": pa.array(interests),
            "impressions_lower": imp_lo,
            "impressions_upper": imp_hi,
            "spend_lower": spend_lo,
            "spend_upper": spend_hi,
            "currency": _dictionary(_choice(rng, rows, [80, 12, 8]), ["USD", "EUR", "BRL"]),
            "ad_delivery_start": pa.array(start, pa.date32()),
            "ad_delivery_stop": pa.array(stop, pa.date32()),
        }
    )


GENERATORS = {
    "url_shares": (url_shares_table, URL_SHARES_ROWS),
    "ads_targeting": (ads_targeting_table, ADS_TARGETING_ROWS),
}


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically (a half-written file never has the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=256 * 1024)
    tmp.replace(path)


def ensure_datasets(
    data_dir: str | Path, rows: dict[str, int] | None = None, force: bool = False
) -> dict[str, Path]:
    """Write ``<data_dir>/<name>.parquet`` for each dataset unless an identical one is there.

    A small ``<name>.parquet.json`` next to each file records the row count and seed it was
    made with; a different request (or *force*) regenerates. Returns name -> path.
    """
    data_dir = Path(data_dir)
    out = {}
    for name, (build, default_rows) in GENERATORS.items():
        n = (rows or {}).get(name, default_rows)
        path = data_dir / f"{name}.parquet"
        stamp = path.with_name(path.name + ".json")
        want = {"rows": n, "generator": f"{__name__}.{build.__name__}", "version": 1}
        current = json.loads(stamp.read_text()) if stamp.exists() and path.exists() else None
        if force or current != want:
            write_parquet(build(n), path)
            stamp.write_text(json.dumps(want, sort_keys=True))
        out[name] = path
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fort_hub.dev.datasets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("data_dir", help="directory to write <name>.parquet files into")
    parser.add_argument("--url-shares-rows", type=int, default=URL_SHARES_ROWS)
    parser.add_argument("--ads-targeting-rows", type=int, default=ADS_TARGETING_ROWS)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    rows = {"url_shares": args.url_shares_rows, "ads_targeting": args.ads_targeting_rows}
    for name, path in ensure_datasets(args.data_dir, rows, force=args.force).items():
        print(f"{name}: {path} ({pq.ParquetFile(path).metadata.num_rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
