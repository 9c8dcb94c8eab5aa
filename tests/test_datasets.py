"""The demo's sample datasets: deterministic, FORT-shaped, reused when already generated."""

import pyarrow.parquet as pq

from fort_hub.dev import datasets


def test_same_seed_same_bytes_different_seed_differs():
    a = datasets.url_shares_table(20_000)
    assert a.equals(datasets.url_shares_table(20_000))
    assert not a.equals(datasets.url_shares_table(20_000, seed=1))
    b = datasets.ads_targeting_table(5_000)
    assert b.equals(datasets.ads_targeting_table(5_000))


def test_url_shares_shape_and_noise():
    t = datasets.url_shares_table(50_000)
    assert t.num_rows == 50_000
    assert t.column_names == [
        "url", "domain", "month", "country", "age_bracket", "gender",
        "shares", "views", "reactions", "fact_check_rating",
    ]  # fmt: skip
    shares = t["shares"].to_numpy()
    # Gaussian noise makes some small counts negative, as in the released URLs dataset
    assert (shares < 0).any() and (shares > 0).any()
    ratings = t["fact_check_rating"].drop_null().unique().to_pylist()
    assert set(ratings) <= set(datasets.RATINGS) and ratings
    assert 0 < t["fact_check_rating"].null_count < t.num_rows
    assert all(u.startswith("https://") for u in t["url"].slice(0, 100).to_pylist())


def test_ads_targeting_ranges_are_consistent():
    t = datasets.ads_targeting_table(10_000).to_pandas()
    assert t["ad_id"].is_unique
    assert (t["ad_delivery_stop"] > t["ad_delivery_start"]).all()
    bounded = t["impressions_upper"].notna()
    assert (t.loc[bounded, "impressions_upper"] > t.loc[bounded, "impressions_lower"]).all()
    assert (t["targeting_age_min"] <= t["targeting_age_max"]).all()


def test_ensure_datasets_writes_once(tmp_path):
    rows = {"url_shares": 3_000, "ads_targeting": 1_000}
    paths = datasets.ensure_datasets(tmp_path, rows)
    assert pq.ParquetFile(paths["url_shares"]).metadata.num_rows == 3_000
    mtime = paths["url_shares"].stat().st_mtime_ns
    datasets.ensure_datasets(tmp_path, rows)
    assert paths["url_shares"].stat().st_mtime_ns == mtime  # reused
    datasets.ensure_datasets(tmp_path, {**rows, "url_shares": 4_000})
    assert pq.ParquetFile(paths["url_shares"]).metadata.num_rows == 4_000


def test_default_size_is_at_least_a_million_rows():
    assert datasets.URL_SHARES_ROWS >= 1_000_000


def test_the_policies_declare_the_generated_noise():
    from importlib.resources import files

    from fort_hub.policy import load_policy

    for name in ("demo-policy.yaml", "example-policy.yaml"):
        policy = load_policy(files("fort_hub.dev") / "data" / name)
        declared = policy.datasets["url_shares"].noise
        assert declared == {
            col: {"distribution": "gaussian", "variance": sd**2}
            for col, sd in datasets.NOISE_SD.items()
        }, name
