"""The eMotions family of splits: ``full``, ``balanced``, ``test`` and ``official``.

Every variant assigns each clip to train, val or test. What makes this more than a shuffle:

* **No leakage.** Short-form platforms are full of re-uploads. Clips with identical content
  (same ``sha256``) and near-duplicates (``visual_hash`` within ``NEAR_DUPLICATE_BITS`` bits of
  Hamming distance) are joined into one group with union-find (transitively: A≈B and B≈C puts
  all three together), and a group always goes to a single split, so a model is never scored
  on a clip it has effectively seen in training.
* **Stratified by label.** Per class, test and val get ``round(share × clips)`` clips (at least
  one each), train gets the rest; every class therefore appears in every split. Groups are
  dealt whole, so with multi-clip groups the counts are close to, not exactly, the targets.
  A group whose clips carry different labels counts as its majority label.
* **Seeded.** The same manifest (in any row order) and seed give identical frames; each variant
  draws from its own stream, so asking for one variant does not change another.

``official`` is the exception to the rules above: train and test are the dataset's own split
lists (manifest column ``official_split``), untouched, and only validation is drawn (from the
listed train clips, seeded, stratified, duplicate groups whole). Lists are the authors', so a
duplicate group that spans their train and test is not moved but reported, pair by pair, as an
``OfficialLeakWarning``.

A class needs at least one independent group per non-empty split (3 for train/val/test) or
``make_variants`` raises ``SplitError`` naming the class; drop or enlarge the class instead of
training on a split that cannot measure it.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emotions.atomic import atomic_write
from emotions.config import OfficialVariantConfig, Params, SplitShares, VariantsConfig
from emotions.errors import StageError, require_input
from emotions.layout import SPLIT, Layout

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("full", "balanced", "test", "official")
SPLITS: tuple[str, ...] = ("train", "val", "test")
OUTPUT_COLUMNS: tuple[str, ...] = ("clip_id", "path", "label", "polarity", "agreement", "split")
REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "path", "label", "polarity", "agreement", "sha256")
SPLIT_FILE = SPLIT

# A 64-bit dHash of the same shot re-encoded, resized or lightly cropped differs in a few bits;
# unrelated frames differ in ~32. Six bits keeps re-uploads together without merging unrelated
# clips.
NEAR_DUPLICATE_BITS = 6
# Hash comparisons per step of the pairwise Hamming scan (bounds memory to ~32 MB).
_CELLS = 4_000_000


class SplitError(StageError, ValueError):
    """The manifest cannot be split as asked (a class too small, bad shares, bad input)."""


class OfficialLeakWarning(UserWarning):
    """The official lists put copies of one clip in both train and test (left as listed)."""


class _UnionFind:
    """Disjoint sets over row indices, with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return int(item)

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        if self.size[root_a] < self.size[root_b]:
            root_a, root_b = root_b, root_a
        self.parent[root_b] = root_a
        self.size[root_a] += self.size[root_b]


def _parse_hashes(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``visual_hash`` as uint64 plus a mask of rows that have one."""
    n = len(manifest)
    values = np.zeros(n, dtype=np.uint64)
    known = np.zeros(n, dtype=bool)
    if "visual_hash" not in manifest.columns:
        return values, known
    for row, (clip_id, text) in enumerate(
        zip(manifest["clip_id"], manifest["visual_hash"], strict=True)
    ):
        if pd.isna(text) or str(text) == "":
            continue
        try:
            if len(str(text)) != 16:
                raise ValueError
            values[row] = np.uint64(int(str(text), 16))
        except ValueError:
            raise SplitError(
                f"clip {clip_id!r}: visual_hash {text!r} is not 16 hex digits"
            ) from None
        known[row] = True
    return values, known


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (``np.bitwise_count`` exists from numpy 2.0 on)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values[..., None].view(np.uint8)
    return _BYTE_BITS[as_bytes].sum(axis=-1, dtype=np.uint8)


_BYTE_BITS = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _near_pairs(hashes: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) whose hashes differ in at most ``max_bits`` bits.

    An exact blocked scan of the upper triangle: O(n²) vectorised popcounts (a few seconds for
    30k clips) in blocks of about ``_CELLS`` comparisons, which keeps memory flat and the code
    obviously correct.
    """
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    n = len(hashes)
    block = max(1, _CELLS // max(n, 1))
    for start in range(0, n, block):
        rows_hashes = hashes[start : start + block]
        later = hashes[start:]
        distance = _popcount(rows_hashes[:, None] ^ later[None, :])
        rows, cols = np.nonzero(distance <= max_bits)
        keep = rows < cols
        firsts.append(rows[keep] + start)
        seconds.append(cols[keep] + start)
    if not firsts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def duplicate_groups(
    manifest: pd.DataFrame, *, near_duplicate_bits: int = NEAR_DUPLICATE_BITS
) -> np.ndarray:
    """A group number per row: rows sharing a sha256 or a near-identical visual_hash share one.

    Groups are numbered by their first row, so the numbering follows the frame's row order.
    """
    n = len(manifest)
    sets = _UnionFind(n)
    first_of: dict[str, int] = {}
    for row, digest in enumerate(manifest["sha256"]):
        if pd.isna(digest):
            continue
        key = str(digest).lower()
        if key in first_of:
            sets.union(first_of[key], row)
        else:
            first_of[key] = row
    hashes, known = _parse_hashes(manifest)
    rows = np.flatnonzero(known)
    if near_duplicate_bits >= 0 and len(rows) > 1:
        first, second = _near_pairs(hashes[rows], near_duplicate_bits)
        for a, b in zip(rows[first], rows[second], strict=True):
            sets.union(int(a), int(b))
    roots = np.array([sets.find(row) for row in range(n)], dtype=np.int64)
    _, numbers = np.unique(roots, return_inverse=True)
    # Renumber in order of first appearance so the ids do not depend on union order.
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(number), len(order)) for number in numbers])


def _rng(seed: int, name: str) -> np.random.Generator:
    """One independent, stable stream per (seed, variant)."""
    return np.random.default_rng([seed % 2**64, zlib.crc32(name.encode("utf-8"))])


def _quota(share: float, count: int) -> int:
    return 0 if share <= 0 else max(1, round(share * count))


def _assign(
    frame: pd.DataFrame,
    shares: SplitShares,
    rng: np.random.Generator,
    *,
    variant: str,
    near_duplicate_bits: int,
    test_eligible: np.ndarray | None = None,
) -> pd.Series:
    """Split label per row: whole duplicate groups, stratified by each group's majority label.

    Per class, groups are shuffled and test then val are filled up to their quota with groups
    that fit (a group larger than what is left is skipped, so big groups land in train); if no
    group fits, the smallest one is taken so that the class still appears in that split. At
    least one group per later split is always kept back, train included. ``test_eligible``
    (per row) restricts which groups may go to test: a group is eligible only if all its rows are.
    """
    groups = duplicate_groups(frame, near_duplicate_bits=near_duplicate_bits)
    table = pd.DataFrame({"group": groups, "label": frame["label"].astype(str).to_numpy()})
    table["eligible"] = True if test_eligible is None else test_eligible
    per_group = table.groupby("group").agg(size=("label", "size"), eligible=("eligible", "all"))
    # Majority label per group; ties go to the alphabetically first label.
    votes = table.groupby(["group", "label"]).size().reset_index(name="votes")
    votes = votes.sort_values(["group", "votes", "label"], ascending=[True, False, True])
    per_group["label"] = votes.drop_duplicates("group").set_index("group")["label"]
    needed = [split for split, share in (("test", shares.test), ("val", shares.val)) if share > 0]
    split_of_group: dict[int, str] = {}
    for key, members in per_group.groupby("label", sort=True):
        label = str(key)
        if len(members) < len(needed) + 1:
            clips = int(members["size"].sum())
            raise SplitError(
                f"variant {variant!r}: class {label!r} has {clips} clip(s) in {len(members)} "
                f"independent group(s) (exact and near duplicates count once); train, "
                f"{' and '.join(needed)} need at least one each, so {len(needed) + 1} are "
                f"required. Add clips of {label!r} or remove the class."
            )
        order = members.index.to_numpy()[rng.permutation(len(members))]
        sizes = members.loc[order, "size"].to_numpy()
        eligible = members.loc[order, "eligible"].to_numpy()
        total = int(sizes.sum())
        free = np.ones(len(order), dtype=bool)
        for position, split in enumerate(needed):
            share = shares.test if split == "test" else shares.val
            candidates = free & (eligible if split == "test" else True)
            spare = int(free.sum()) - (len(needed) - position)  # keep one per later split
            remaining = min(_quota(share, total), int(sizes[candidates].sum()))
            taken = 0
            for index in np.flatnonzero(candidates):
                if taken == spare or remaining <= 0:
                    break
                if sizes[index] <= remaining:
                    split_of_group[int(order[index])] = split
                    free[index] = False
                    remaining -= int(sizes[index])
                    taken += 1
            if taken == 0 and spare > 0 and candidates.any():
                smallest = np.flatnonzero(candidates)[np.argmin(sizes[candidates], kind="stable")]
                split_of_group[int(order[smallest])] = split
                free[smallest] = False
        for index in np.flatnonzero(free):
            split_of_group[int(order[index])] = "train"
    return pd.Series([split_of_group[int(group)] for group in groups], index=frame.index)


def _check_input(manifest: pd.DataFrame, names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise SplitError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    missing = [column for column in REQUIRED_COLUMNS if column not in manifest.columns]
    if missing:
        raise SplitError(f"manifest lacks column(s): {', '.join(missing)}")
    if manifest.empty:
        raise SplitError("manifest is empty: nothing to split")
    if manifest["clip_id"].isna().any() or manifest["label"].isna().any():
        raise SplitError("manifest has rows without a clip_id or a label (run validate first)")
    duplicated = manifest["clip_id"][manifest["clip_id"].duplicated()]
    if not duplicated.empty:
        raise SplitError(f"clip_id not unique, e.g. {duplicated.iloc[0]!r} (run validate first)")


def _check_shares(name: str, shares: SplitShares) -> None:
    if shares.val + shares.test >= 1.0:
        raise SplitError(
            f"variants.{name}: val ({shares.val:g}) + test ({shares.test:g}) leave no train share"
        )


def _finish(frame: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    out = frame.assign(split=split)[list(OUTPUT_COLUMNS)]
    out = out.astype({"clip_id": str, "path": str, "label": str, "polarity": str})
    out["agreement"] = out["agreement"].astype(float)
    return out.sort_values("clip_id", kind="stable").reset_index(drop=True)


def _undersample(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Every class cut down to the size of the smallest, by a seeded choice of clips."""
    counts = frame["label"].value_counts()
    smallest = int(counts.min())
    keep: list[np.ndarray] = []
    for label in sorted(counts.index):
        rows = np.flatnonzero((frame["label"] == label).to_numpy())
        keep.append(rng.choice(rows, size=smallest, replace=False))
    return frame.iloc[np.sort(np.concatenate(keep))]


def make_variants(
    manifest: pd.DataFrame,
    names: list[str],
    *,
    config: VariantsConfig,
    seed: int,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
) -> dict[str, pd.DataFrame]:
    """Build the requested variants; each frame has ``OUTPUT_COLUMNS``, sorted by clip_id.

    * ``full``: every clip, stratified train/val/test with ``config.full`` shares.
    * ``balanced``: each class undersampled (seeded) to the smallest class, then split with
      ``config.balanced`` shares, so every class has the same number of clips.
    * ``official``: the dataset's train/test lists as listed, val drawn from their train
      with ``config.official.val`` (clips no list names are left out).
    * ``test``: test clips only from groups whose every clip has agreement ≥
      ``config.test.min_agreement`` (stratified as far as such clips exist; a class without any
      gets no test clips), a larger test share; the other clips go to train and val.
    """
    _check_input(manifest, names)
    # Sorting first makes the result independent of the manifest's row order.
    frame = manifest.sort_values("clip_id", kind="stable").reset_index(drop=True)
    frame = frame.assign(label=frame["label"].astype(str))
    out: dict[str, pd.DataFrame] = {}
    for name in names:
        rng = _rng(seed, name)
        if name == "full":
            _check_shares(name, config.full)
            split = _assign(
                frame, config.full, rng, variant=name, near_duplicate_bits=near_duplicate_bits
            )
            out[name] = _finish(frame, split)
        elif name == "balanced":
            _check_shares(name, config.balanced)
            subset = _undersample(frame, rng).reset_index(drop=True)
            split = _assign(
                subset, config.balanced, rng, variant=name, near_duplicate_bits=near_duplicate_bits
            )
            out[name] = _finish(subset, split)
        elif name == "official":
            out[name] = _official(frame, config.official, rng, near_duplicate_bits)
        else:
            shares = SplitShares(val=config.test.val, test=config.test.test)
            _check_shares(name, shares)
            agreement = pd.to_numeric(frame["agreement"], errors="coerce")
            eligible = (agreement >= config.test.min_agreement).to_numpy()
            if not eligible.any():
                raise SplitError(
                    f"variant 'test': no clip has agreement ≥ {config.test.min_agreement:g}"
                )
            split = _assign(
                frame,
                shares,
                rng,
                variant=name,
                near_duplicate_bits=near_duplicate_bits,
                test_eligible=eligible,
            )
            out[name] = _finish(frame, split)
    return out


def _official(
    frame: pd.DataFrame,
    config: OfficialVariantConfig,
    rng: np.random.Generator,
    near_duplicate_bits: int,
) -> pd.DataFrame:
    """Train and test as listed; val carved from the listed train clips; unlisted clips left out."""
    if "official_split" not in frame.columns or not frame["official_split"].notna().any():
        raise SplitError(
            "variant 'official' needs the dataset's split lists (trainlistNN.txt / "
            "testlistNN.txt, see the dataset params splits: and split_index:), and no clip of "
            "this manifest is named by one; ingest a layout with lists or drop the variant"
        )
    listed = frame["official_split"].astype("string")
    bad = sorted(set(listed.dropna()) - {"train", "test"})
    if bad:
        raise SplitError(f"variant 'official': official_split values {bad} (expected train, test)")
    subset = frame[listed.notna()].reset_index(drop=True)
    official = subset["official_split"].astype(str)
    report_official_leaks(subset, near_duplicate_bits=near_duplicate_bits)
    split = official.copy()
    train = subset[official == "train"]
    if config.val > 0 and len(train):
        # Only val is drawn: shares with test = 0 make _assign deal train and val alone.
        shares = SplitShares.model_construct(val=config.val, test=0.0)
        carved = _assign(
            train, shares, rng, variant="official", near_duplicate_bits=near_duplicate_bits
        )
        split.loc[carved.index] = carved
    return _finish(subset, split)


def official_leaks(
    frame: pd.DataFrame, *, near_duplicate_bits: int = NEAR_DUPLICATE_BITS
) -> list[tuple[str, str]]:
    """(train path, test path) for every listed train clip that is a copy (exact or near) of
    a listed test clip, in path order."""
    listed = frame[frame["official_split"].isin(["train", "test"])].reset_index(drop=True)
    groups = duplicate_groups(listed, near_duplicate_bits=near_duplicate_bits)
    pairs: list[tuple[str, str]] = []
    for group in np.unique(groups):
        members = listed[groups == group]
        trains = sorted(members.loc[members["official_split"] == "train", "path"].astype(str))
        tests = sorted(members.loc[members["official_split"] == "test", "path"].astype(str))
        pairs += [(a, b) for a in trains for b in tests]
    return sorted(pairs)


def report_official_leaks(
    frame: pd.DataFrame, *, near_duplicate_bits: int = NEAR_DUPLICATE_BITS
) -> list[tuple[str, str]]:
    """Warn (``OfficialLeakWarning``, and the log) about each train/test copy pair."""
    pairs = official_leaks(frame, near_duplicate_bits=near_duplicate_bits)
    if pairs:
        shown = "; ".join(f"{a} ~ {b}" for a, b in pairs[:10])
        more = f" (and {len(pairs) - 10} more)" if len(pairs) > 10 else ""
        message = (
            f"variant 'official': {len(pairs)} clip pair(s) in the official train and test "
            f"lists are copies of each other (kept as listed): {shown}{more}"
        )
        log.warning(message)
        warnings.warn(message, OfficialLeakWarning, stacklevel=3)
    return pairs


def write_variants(variants: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    """Write ``out_dir/<name>/split.parquet`` for each variant, each file atomically."""
    paths: dict[str, Path] = {}
    for name, frame in variants.items():
        path = Path(out_dir) / name / SPLIT_FILE
        atomic_write(path, lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
        paths[name] = path
    return paths


def main(params: Params, *, dataset: str) -> None:
    """`emotions variants`: the dataset's variants from its manifest, one line per variant."""
    layout = Layout()
    entry = params.dataset(dataset)
    manifest = pd.read_parquet(require_input(layout.manifest(dataset), "emotions ingest"))
    try:
        variants = make_variants(
            manifest, list(entry.variants), config=params.variants, seed=params.seed
        )
    except SplitError as error:
        raise StageError(str(error)) from None
    written = write_variants(variants, layout.variants_dir(dataset))
    for name, path in written.items():
        counts = variants[name]["split"].value_counts()
        shown = ", ".join(f"{int(n)} {split}" for split, n in counts.items())
        print(f"variant {name}: {shown} -> {path}")
