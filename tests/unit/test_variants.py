"""The eMotions splits: shares, stratification, balance, agreement, determinism, no leakage."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pandas as pd
import pytest

from emotions.config import SplitShares, VariantsConfig
from emotions.config import TestVariantConfig as _TestVariantConfig  # not a test class
from emotions.stages.variants import (
    NEAR_DUPLICATE_BITS,
    OUTPUT_COLUMNS,
    SPLITS,
    SplitError,
    duplicate_groups,
    make_variants,
    write_variants,
)

LABELS = {"Tension": "negative", "Fear": "negative", "Excitation": "positive", "Neutral": "neutral"}
CONFIG = VariantsConfig(
    full=SplitShares(val=0.15, test=0.15),
    balanced=SplitShares(val=0.15, test=0.15),
    test=_TestVariantConfig(val=0.1, test=0.4, min_agreement=0.8),
)
ALL = ["full", "balanced", "test"]


def manifest(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Distinct clips: unique sha256, random 64-bit visual hashes (≈32 bits apart)."""
    rng = np.random.default_rng(seed)
    labels = [label for label, count in counts.items() for _ in range(count)]
    n = len(labels)
    return pd.DataFrame(
        {
            "clip_id": [
                f"{hashlib.sha256(f'{seed}-{i}'.encode()).hexdigest()[:12]}" for i in range(n)
            ],
            "path": [f"videos/{i:04d}.mp4" for i in range(n)],
            "label": labels,
            "polarity": [LABELS[label] for label in labels],
            "sha256": [
                hashlib.sha256(f"content-{seed}-{i}".encode()).hexdigest() for i in range(n)
            ],
            "agreement": rng.choice([0.4, 0.6, 0.8, 1.0], size=n),
            "visual_hash": [f"{int(value):016x}" for value in rng.integers(0, 2**63, n)],
            "duration_s": 3.0,
        }
    )


def flip_bits(text: str, bits: list[int]) -> str:
    value = int(text, 16)
    for bit in bits:
        value ^= 1 << int(bit)
    return f"{value:016x}"


def with_planted_duplicates(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Re-uploads: exact copies (same sha256), near copies (≤ 6 bits) and chains of them."""
    rng = np.random.default_rng(seed + 1000)
    extra = []
    sources = rng.choice(len(frame), size=40, replace=False)
    for number, source in enumerate(sources):
        row = frame.iloc[source].copy()
        kind = number % 4
        copies = 1 + number % 3
        previous = row
        for copy in range(copies):
            twin = previous.copy()
            twin["clip_id"] = f"dup{seed}-{number}-{copy}"
            twin["path"] = f"videos/dup{number}-{copy}.mp4"
            if kind == 0:  # exact re-upload, possibly mislabelled
                twin["label"] = rng.choice(list(LABELS))
                twin["polarity"] = LABELS[twin["label"]]
            else:  # re-encode: new bytes, a hash 1..6 bits away from the previous copy (chain)
                twin["sha256"] = hashlib.sha256(twin["clip_id"].encode()).hexdigest()
                flips = rng.choice(
                    64, size=int(rng.integers(1, NEAR_DUPLICATE_BITS + 1)), replace=False
                )
                twin["visual_hash"] = flip_bits(previous["visual_hash"], list(flips))
            twin["agreement"] = rng.choice([0.4, 1.0])
            extra.append(twin)
            previous = twin
    return pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def test_frames_have_the_contract_columns_and_cover_every_clip():
    source = manifest({"Tension": 30, "Fear": 25, "Excitation": 40, "Neutral": 20})
    variants = make_variants(source, ALL, config=CONFIG, seed=1)
    assert set(variants) == set(ALL)
    for name, frame in variants.items():
        assert tuple(frame.columns) == OUTPUT_COLUMNS, name
        assert frame["clip_id"].is_monotonic_increasing and frame["clip_id"].is_unique
        assert set(frame["split"]) == set(SPLITS)
        merged = frame.merge(source, on="clip_id", suffixes=("", "_source"))
        assert len(merged) == len(frame)  # every row is a manifest clip, unchanged
        assert (merged["label"] == merged["label_source"]).all()
        assert (merged["path"] == merged["path_source"]).all()
    assert set(variants["full"]["clip_id"]) == set(source["clip_id"])
    assert set(variants["test"]["clip_id"]) == set(source["clip_id"])


@pytest.mark.parametrize("name", ["full", "balanced"])
def test_shares_and_stratification(name):
    source = manifest({"Tension": 60, "Fear": 40, "Excitation": 80, "Neutral": 40})
    frame = make_variants(source, [name], config=CONFIG, seed=3)[name]
    shares = frame["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.15, abs=0.02)
    assert shares["val"] == pytest.approx(0.15, abs=0.02)
    table = pd.crosstab(frame["label"], frame["split"])
    assert (table[list(SPLITS)] >= 1).all().all()  # every class in every split
    per_class = table.div(table.sum(axis=1), axis=0)
    assert ((per_class["test"] - 0.15).abs() <= 0.03).all(), table


def test_balanced_has_equal_class_counts():
    source = manifest({"Tension": 60, "Fear": 23, "Excitation": 80, "Neutral": 41})
    frame = make_variants(source, ["balanced"], config=CONFIG, seed=5)["balanced"]
    counts = frame["label"].value_counts()
    assert set(counts.index) == set(LABELS)
    assert set(counts) == {23}
    table = pd.crosstab(frame["label"], frame["split"])
    assert (table.nunique() == 1).all(), table  # the same split sizes for every class


def test_test_variant_draws_test_only_from_agreed_clips_and_is_larger():
    source = manifest({"Tension": 60, "Fear": 40, "Excitation": 80, "Neutral": 40})
    variants = make_variants(source, ["full", "test"], config=CONFIG, seed=7)
    frame = variants["test"]
    test = frame[frame["split"] == "test"]
    assert (test["agreement"] >= 0.8).all()
    assert set(test["label"]) == set(LABELS)  # stratified: enough agreed clips in each class
    share = len(test) / len(frame)
    assert share == pytest.approx(0.4, abs=0.03)
    assert share > (variants["full"]["split"] == "test").mean() + 0.2
    # Low-agreement clips are not thrown away: they train and validate.
    low = frame[frame["agreement"] < 0.8]
    assert len(low) > 0 and set(low["split"]) == {"train", "val"}


def test_test_variant_caps_test_at_the_agreed_clips():
    source = manifest({"Tension": 30, "Fear": 30, "Excitation": 30, "Neutral": 30})
    source["agreement"] = 0.5
    source.loc[source["label"] == "Excitation", "agreement"] = 0.9
    source.loc[source.index[:3], "agreement"] = 0.95  # three agreed Tension clips
    frame = make_variants(source, ["test"], config=CONFIG, seed=0)["test"]
    test = frame[frame["split"] == "test"]
    assert (test["agreement"] >= 0.8).all()
    counts = test["label"].value_counts()
    assert counts["Excitation"] == 12  # round(0.4 × 30)
    assert counts["Tension"] == 3  # all the agreed Tension clips, short of the 12 wanted
    assert "Fear" not in counts and "Neutral" not in counts


def test_same_seed_same_frames_any_row_order_and_other_seed_differs():
    source = manifest({"Tension": 30, "Fear": 30, "Excitation": 30, "Neutral": 30})
    first = make_variants(source, ALL, config=CONFIG, seed=11)
    shuffled = source.sample(frac=1.0, random_state=4).reset_index(drop=True)
    again = make_variants(shuffled, ALL, config=CONFIG, seed=11)
    other = make_variants(source, ALL, config=CONFIG, seed=12)
    for name in ALL:
        pd.testing.assert_frame_equal(first[name], again[name])
        assert not first[name].equals(other[name]), name
    # A variant does not depend on which other variants were asked for.
    alone = make_variants(source, ["test"], config=CONFIG, seed=11)["test"]
    pd.testing.assert_frame_equal(alone, first["test"])


def test_duplicate_groups_are_transitive_and_respect_the_threshold():
    base = "00000000000000ff"
    frame = pd.DataFrame(
        {
            "clip_id": list("abcdef"),
            "sha256": ["1" * 64, "2" * 64, "3" * 64, "4" * 64, "1" * 64, "5" * 64],
            "visual_hash": [
                base,
                flip_bits(base, [8, 9, 10, 11, 12, 13]),  # 6 bits from a
                flip_bits(base, [8, 9, 10, 11, 12, 13, 20, 21, 22, 23, 24, 25]),  # 6 from b
                flip_bits(base, [40, 41, 42, 43, 44, 45, 46]),  # 7 bits from a: unrelated
                "ffffffffffffffff",  # same sha256 as a
                None,  # no hash: grouped by sha256 only
            ],
        }
    )
    groups = duplicate_groups(frame)
    assert groups[0] == groups[1] == groups[2] == groups[4]
    assert len({groups[0], groups[3], groups[5]}) == 3
    assert duplicate_groups(frame, near_duplicate_bits=7)[3] == groups[0]


@pytest.mark.parametrize("seed", range(6))
def test_no_leakage_between_splits(seed):
    source = with_planted_duplicates(
        manifest({"Tension": 30, "Fear": 24, "Excitation": 36, "Neutral": 24}, seed), seed
    )
    hashes = source.set_index("clip_id")["visual_hash"]
    digests = source.set_index("clip_id")["sha256"]
    variants = make_variants(source, ALL, config=CONFIG, seed=seed)
    for name, frame in variants.items():
        assert frame["clip_id"].is_unique, name
        split_of = frame.set_index("clip_id")["split"]
        content = pd.DataFrame({"sha256": digests[split_of.index], "split": split_of})
        assert (content.groupby("sha256")["split"].nunique() == 1).all(), name
        for left, right in itertools.combinations(split_of.index, 2):
            if split_of[left] != split_of[right]:
                assert hamming(hashes[left], hashes[right]) > NEAR_DUPLICATE_BITS, (
                    name,
                    left,
                    right,
                )
        assert set(frame["split"]) == set(SPLITS), name


def test_planted_duplicates_would_leak_without_grouping():
    """The leakage test has teeth: a split blind to near duplicates does leak on this data."""
    counts = {"Tension": 30, "Fear": 24, "Excitation": 36, "Neutral": 24}
    source = with_planted_duplicates(manifest(counts, 0), 0)
    hashes = source.set_index("clip_id")["visual_hash"]
    blind = make_variants(source, ["full"], config=CONFIG, seed=0, near_duplicate_bits=-1)
    split_of = blind["full"].set_index("clip_id")["split"]
    leaks = [
        (left, right)
        for left, right in itertools.combinations(split_of.index, 2)
        if split_of[left] != split_of[right]
        and hamming(hashes[left], hashes[right]) <= NEAR_DUPLICATE_BITS
    ]
    assert len(leaks) >= 5


def test_a_class_too_small_is_a_clear_error():
    source = manifest({"Tension": 30, "Fear": 2, "Excitation": 30})
    with pytest.raises(SplitError, match=r"class 'Fear' has 2 clip\(s\) in 2 independent group"):
        make_variants(source, ["full"], config=CONFIG, seed=0)


def test_duplicates_count_once_toward_the_minimum():
    source = manifest({"Tension": 30, "Fear": 5, "Excitation": 30})
    source.loc[source["label"] == "Fear", "sha256"] = "a" * 64  # five uploads of one video
    with pytest.raises(SplitError, match=r"class 'Fear' has 5 clip\(s\) in 1 independent group"):
        make_variants(source, ["full"], config=CONFIG, seed=0)


def test_bad_requests_are_rejected():
    source = manifest({"Tension": 10, "Excitation": 10})
    with pytest.raises(SplitError, match="unknown variant"):
        make_variants(source, ["fancy"], config=CONFIG, seed=0)
    with pytest.raises(SplitError, match="leave no train share"):
        config = VariantsConfig(full=SplitShares(val=0.5, test=0.5))
        make_variants(source, ["full"], config=config, seed=0)
    with pytest.raises(SplitError, match="sha256"):
        make_variants(source.drop(columns=["sha256"]), ["full"], config=CONFIG, seed=0)
    broken = source.copy()
    broken.loc[0, "visual_hash"] = "xyz"
    with pytest.raises(SplitError, match="visual_hash 'xyz'"):
        make_variants(broken, ["full"], config=CONFIG, seed=0)


def test_write_variants_round_trips(tmp_path):
    source = manifest({"Tension": 20, "Fear": 20, "Excitation": 20})
    variants = make_variants(source, ALL, config=CONFIG, seed=2)
    paths = write_variants(variants, tmp_path / "variants")
    assert paths == {name: tmp_path / "variants" / name / "split.parquet" for name in ALL}
    for name, path in paths.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), variants[name])
        assert [entry.name for entry in path.parent.iterdir()] == ["split.parquet"]
