"""The ingest stage: a dataset root in any supported layout → manifest, quarantine, annotation stats.

Steps: the layout's adapter lists candidates; every path is checked to stay inside the root and
to exist; labels are resolved against the taxonomy (votes aggregated first); every remaining
file is probed in an isolated worker with a timeout and must be a clip within the params'
bounds (``ingest.duration_s``, ``fps``, ``min_frames``, ``min_side``, ``max_side``; a still
image is never one, see ``emotions.media.clipcheck``); identical files are collapsed (same label)
or all rejected (different labels). Every listed entry ends up in ``manifest.parquet`` or in
``quarantine.csv`` with a specific reason. Nothing stops the stage except having
no usable clip at all, and nothing under the root is ever written.

Layouts with split lists (``release``, ``frames``, ``videoemotion8``, ``ekman6``) also give each
clip its ``official_split``; a listed clip that has no file or ends in quarantine is counted and
named in ``annotation_stats.json`` (section ``official_split``) and in the log, so the official
split never shrinks unnoticed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from emotions.atomic import atomic_write, fsync_folder, fsync_path, process_alive
from emotions.config import IngestConfig, Params
from emotions.corpus.confine import escape_reason, under
from emotions.corpus.manifest import DTYPES, EXTRA_COLUMNS, MANIFEST_COLUMNS, clip_id_for
from emotions.corpus.sources import Candidate, Reject, Source, SourceOptions, get_source
from emotions.corpus.votes import aggregate_votes, annotation_stats, clean_votes
from emotions.errors import StageError
from emotions.layout import ANNOTATION_STATS, MANIFEST, QUARANTINE
from emotions.media.clipcheck import ClipBounds
from emotions.media.probe import REASON_PREFIXES, ClipInfo, ProbeTask, probe_file
from emotions.media.workers import map_isolated

log = logging.getLogger(__name__)

MANIFEST_NAME = MANIFEST
QUARANTINE_NAME = QUARANTINE
STATS_NAME = ANNOTATION_STATS

# Audio containers are probed too, so a voice memo is reported as "no video stream" rather than
# as an unknown kind of file.
AUDIO_SUFFIXES = (".m4a", ".mp3", ".aac", ".wav", ".flac", ".ogg", ".opus", ".wma")


class NoUsableClipsError(StageError):
    """Not one clip survived; the message is one line and quarantine.csv says why for each file."""


@dataclass(frozen=True)
class IngestResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict
    manifest_path: Path
    quarantine_path: Path
    stats_path: Path


@dataclass(frozen=True)
class _Pending:
    """A candidate that passed the cheap checks and waits for its probe."""

    found: str  # path as the layout gave it (quarantine reports this)
    path: str  # normalised root-relative POSIX path (the manifest records this)
    target: Path  # what to open
    label: str
    platform: str | None
    # From the votes; single-label sources have agreement 1.0 and no votes.
    agreement: float = 1.0
    n_votes: int | None = None
    deciding_stage: int | None = None
    official_split: str | None = None
    frames: bool = False

    @property
    def voted(self) -> bool:
        return self.n_votes is not None


def ingest(
    root: Path,
    out: Path,
    *,
    layout: str,
    taxonomy: dict[str, str],
    config: IngestConfig,
    aliases: Mapping[str, str] | None = None,
    progress: bool = True,
    options: SourceOptions | None = None,
) -> IngestResult:
    """Ingest ``root`` (in ``layout``) into ``out``; raises NoUsableClipsError if nothing is usable.

    ``taxonomy`` maps class → polarity in the declared class order (ties between classes are
    broken by that order). ``aliases`` (params.yaml ``label_aliases`` of the taxonomy) maps extra
    spellings onto classes, e.g. a release's ``Sad`` folder onto ``Sadness``. ``options`` are the dataset's split-list and frame-rate params.
    ``quarantine.csv`` is written even when the stage fails.
    """
    root, out = Path(root), Path(out)
    options = options or SourceOptions()
    source = get_source(layout, options, taxonomy, aliases)
    _refuse_output_inside(root, out)
    out.mkdir(parents=True, exist_ok=True)
    quarantine_path = out / QUARANTINE_NAME
    if not root.is_dir():
        _fail(out, [], f"no usable clip: the root {root} is not a directory")

    rejected: list[tuple[str, str]] = []
    listed: dict[str, str] = {}
    resolve = _resolver(source, taxonomy, aliases or {})
    pending, votes = _collect(root, source, resolve, taxonomy, config, rejected, listed)
    bounds = ClipBounds.of(config)
    outcomes = map_isolated(
        probe_file,
        [
            ProbeTask(str(p.target), config.max_file_mb, p.frames, options.fps, bounds)
            for p in pending
        ],
        workers=config.workers,
        timeout_s=config.timeout_s,
        desc="probe",
        progress=progress,
    )
    probed: list[tuple[_Pending, ClipInfo]] = []
    for item, outcome in zip(pending, outcomes, strict=True):
        if not outcome.ok:
            rejected.append((item.found, _worker_reason(outcome.error or "")))
        elif outcome.value.info is None:
            rejected.append((item.found, outcome.value.reason or "undecodable"))
        else:
            probed.append((item, outcome.value.info))
    kept = _collapse_duplicates(probed, rejected)

    quarantine = pd.DataFrame(sorted(rejected), columns=["path", "reason"])
    if not kept:
        _fail(out, rejected, _failure_line(root, layout, rejected, quarantine_path))
    manifest = _manifest(kept, taxonomy)
    stats = _stats(manifest, quarantine, kept, votes, taxonomy, config, layout)
    if source.split_lists is not None:
        stats["official_split"] = _list_stats(source, root, manifest, rejected, listed)

    manifest_path, stats_path = out / MANIFEST_NAME, out / STATS_NAME
    publish(
        out,
        [
            (quarantine_path, _csv_writer(quarantine)),
            (
                stats_path,
                lambda tmp: tmp.write_text(
                    json.dumps(stats, indent=2, ensure_ascii=False) + "\n", "utf-8"
                ),
            ),
            (manifest_path, lambda tmp: manifest.to_parquet(tmp, index=False)),
        ],
    )
    log.info("ingest: %d clips kept, %d quarantined", len(manifest), len(quarantine))
    return IngestResult(manifest, quarantine, stats, manifest_path, quarantine_path, stats_path)


# --------------------------------------------------------------------------------------------
# Listing and cheap checks


def _resolver(
    source: Source, taxonomy: Mapping[str, str], aliases: Mapping[str, str]
) -> Callable[[object], str | None]:
    """The label → class rule of this run: class names, declared aliases, the layout's synonyms."""
    return lambda raw: source.resolve_label(raw, taxonomy, aliases)


def _collect(
    root: Path,
    source: Source,
    resolve: Callable[[object], str | None],
    taxonomy: Mapping[str, str],
    config: IngestConfig,
    rejected: list[tuple[str, str]],
    listed: dict[str, str],
) -> tuple[list[_Pending], pd.DataFrame]:
    """Run the adapter and every check that needs no decoding; returns (to probe, clean votes).

    ``listed`` receives, for every record a split list names, its path as found → the split,
    so that listed clips that end in quarantine can be counted.
    """
    suffixes = {s.lower() for s in config.extensions} | set(AUDIO_SUFFIXES)
    located: list[tuple[Candidate, str, Path]] = []
    vote_frames: list[pd.DataFrame] = []
    for record in source.scan(root):
        if record.official_split is not None:
            listed[record.path] = record.official_split
        if isinstance(record, Reject):
            rejected.append((record.path, record.reason))
            continue
        where = locate(root, record.path, folder=record.frames)
        if isinstance(where, str):
            rejected.append((record.path, where))
            continue
        path, target = where
        if record.frames:
            # Opened by its place under the root: the audio file is found beside it there.
            target = Path(os.path.abspath(root)) / path
        suffix = PurePosixPath(path).suffix.lower()
        if not record.frames and suffix not in suffixes:
            what = f"unsupported extension '{suffix}'" if suffix else "no file extension"
            rejected.append((record.path, f"not a video: {what}"))
            continue
        located.append((record, path, target))
        if record.votes is not None:
            vote_frames.append(record.votes.assign(clip_id=path))

    votes = _votes(vote_frames, resolve)
    decided = aggregate_votes(votes, list(taxonomy)) if len(votes) else None
    pending: list[_Pending] = []
    for record, path, target in located:
        from_votes: dict[str, object] = {}
        if record.votes is not None:
            if decided is None or path not in decided.index:
                rejected.append((record.path, "no annotations (no usable votes)"))
                continue
            row = decided.loc[path]
            raw = str(row["label"])
            from_votes = {
                "agreement": float(row["agreement"]),
                "n_votes": int(row["n_votes"]),
                "deciding_stage": int(row["deciding_stage"]),
            }
        else:
            raw = record.label or ""
        label = resolve(raw)
        if label is None:
            rejected.append((record.path, f"unknown label '{raw}'"))
            continue
        pending.append(
            _Pending(
                record.path,
                path,
                target,
                label,
                record.platform,
                **from_votes,
                official_split=record.official_split,
                frames=record.frames,
            )
        )
    return pending, votes


def _votes(frames: list[pd.DataFrame], resolve: Callable[[object], str | None]) -> pd.DataFrame:
    """All clips' votes, keyed by normalised path, with labels spelled as the taxonomy spells them."""
    if not frames:
        return pd.DataFrame(
            {
                "clip_id": pd.Series(dtype=object),
                "stage": pd.Series(dtype="int64"),
                "annotator": pd.Series(dtype=object),
                "label": pd.Series(dtype=object),
            }
        )
    votes, dropped = clean_votes(pd.concat(frames, ignore_index=True))
    if dropped:
        log.warning("ingest: dropped %d vote rows without a label or an integer stage", dropped)
    spelled = {raw: resolve(raw) or raw for raw in votes["label"].unique()}
    return votes.assign(label=votes["label"].map(spelled))


def locate(root: Path, found: str, *, folder: bool = False) -> tuple[str, Path] | str:
    """(normalised relative path, path to open) for a listed path, or the quarantine reason.

    The check is on the fully resolved path, so ``..``, absolute paths and symlinks (at any
    depth) that lead out of the root are all caught; nothing outside the root is ever opened.
    ``folder``: the clip is a frame folder, so a directory is expected instead of a file.
    """
    reason = escape_reason(root, found)
    if reason is not None:
        return reason
    root_abs = Path(os.path.abspath(root))
    listed = Path(found)
    joined = Path(os.path.normpath(listed if listed.is_absolute() else root_abs / listed))
    resolved = under(root, found)
    if not resolved.exists():
        return "missing file"
    if folder and not resolved.is_dir():
        return "not a video: a file where a frame folder is expected"
    if not folder and not resolved.is_file():
        return "not a video: not a regular file"
    if joined.is_relative_to(root_abs):
        return joined.relative_to(root_abs).as_posix(), resolved
    # Listed by an absolute path that reaches the root through a link: record the real place.
    return resolved.relative_to(root.resolve()).as_posix(), resolved


# --------------------------------------------------------------------------------------------
# After probing


def _worker_reason(error: str) -> str:
    """map_isolated already says "timeout: ..." / "worker crashed ..."; anything else is a crash
    inside the probe that escaped it, which still means the file could not be decoded."""
    if error.startswith(("timeout", "worker crashed")):
        return error
    return f"undecodable: {error}"


def _collapse_duplicates(
    probed: list[tuple[_Pending, ClipInfo]], rejected: list[tuple[str, str]]
) -> list[tuple[_Pending, ClipInfo]]:
    """Keep one file per content; identical files under different labels are all rejected."""
    groups: dict[str, list[tuple[_Pending, ClipInfo]]] = {}
    for item, info in sorted(probed, key=lambda pair: pair[0].path):
        groups.setdefault(info.sha256, []).append((item, info))
    kept = []
    for group in groups.values():
        labels = list(dict.fromkeys(item.label for item, _ in group))
        if len(labels) == 1:
            kept.append(group[0])
            rejected.extend(
                (item.found, f"duplicate of {group[0][0].path}") for item, _ in group[1:]
            )
            continue
        for item, _ in group:
            others = [label for label in labels if label != item.label]
            named = " and ".join(f"'{label}'" for label in [item.label, *others])
            elsewhere = ", ".join(other.path for other, _ in group if other is not item)
            rejected.append(
                (item.found, f"label conflict: same content labelled {named} (also at {elsewhere})")
            )
    return kept


def _manifest(kept: list[tuple[_Pending, ClipInfo]], taxonomy: Mapping[str, str]) -> pd.DataFrame:
    rows = []
    for item, info in kept:
        rows.append(
            {
                "clip_id": clip_id_for(info.sha256),
                "path": item.path,
                "label": item.label,
                "polarity": taxonomy[item.label],
                "duration_s": info.duration_s,
                "fps": info.fps,
                "n_frames": info.n_frames,
                "width": info.width,
                "height": info.height,
                "has_audio": info.has_audio,
                "audio_sample_rate": info.audio_sample_rate,
                "audio_channels": info.audio_channels,
                "sha256": info.sha256,
                "agreement": item.agreement,
                "platform": item.platform,
                "size_bytes": info.size_bytes,
                "video_codec": info.video_codec,
                "audio_codec": info.audio_codec,
                "rotation": info.rotation,
                "visual_hash": info.visual_hash,
                "n_votes": item.n_votes,
                "deciding_stage": item.deciding_stage,
                "audio_bad_packets": info.audio_bad_packets,
                "official_split": item.official_split,
            }
        )
    frame = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *EXTRA_COLUMNS]).astype(DTYPES)
    return frame.sort_values("clip_id", kind="stable").reset_index(drop=True)


def _stats(
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    kept: list[tuple[_Pending, ClipInfo]],
    votes: pd.DataFrame,
    taxonomy: Mapping[str, str],
    config: IngestConfig,
    layout: str,
) -> dict:
    # Votes are keyed by path until the content hash is known; the stats speak in clip ids.
    path_to_clip = {item.path: clip_id_for(info.sha256) for item, info in kept if item.voted}
    clip_votes = votes[votes["clip_id"].isin(path_to_clip)]
    clip_votes = clip_votes.assign(clip_id=clip_votes["clip_id"].map(path_to_clip))
    stats = annotation_stats(
        manifest,
        clip_votes,
        class_order=list(taxonomy),
        second_stage_below=config.second_stage_below,
    )
    stats["layout"] = layout
    stats["n_quarantined"] = len(quarantine)
    stats["quarantine_reasons"] = _reason_counts(quarantine["reason"])
    return stats


def _list_stats(
    source: Source,
    root: Path,
    manifest: pd.DataFrame,
    rejected: list[tuple[str, str]],
    listed: dict[str, str],
) -> dict:
    """What the split lists held, what of it survived, and every listed clip that did not."""
    lists = source.split_lists
    assert lists is not None
    lost = [
        {"path": path, "split": listed[path], "reason": reason}
        for path, reason in sorted(rejected)
        if path in listed
    ]
    kept = manifest["official_split"].fillna("unlisted").value_counts()
    if lost:
        shown = ", ".join(item["path"] for item in lost[:5])
        log.warning("ingest: %d listed clips missing, e.g. %s", len(lost), shown)
    try:
        folder = lists.folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        folder = str(lists.folder)
    return {
        "folder": folder,
        "split_index": lists.index,
        "classes": {str(k): v for k, v in sorted(lists.classes.items())},
        "listed": lists.counts(),
        "kept": {key: int(kept.get(key, 0)) for key in ("train", "test", "unlisted")},
        "n_listed_missing": len(lost),
        "listed_missing": lost,
        "n_list_problems": len(lists.problems),
    }


def listed_missing_line(stats: dict) -> str | None:
    """The ingest log's line about lost listed clips ("2 listed clips missing, e.g. …")."""
    section = stats.get("official_split") or {}
    lost = section.get("listed_missing") or []
    if not lost:
        return None
    shown = ", ".join(f"{item['path']} ({item['reason']})" for item in lost[:3])
    return f"{len(lost)} listed clips missing, e.g. {shown}"


def reason_kind(reason: str) -> str:
    """The reason's prefix (``"truncated"``, ``"duplicate of"``, ...) for counting."""
    for prefix in REASON_PREFIXES:
        if reason.startswith(prefix):
            return prefix
    return reason.split(":")[0].split(" (")[0]


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    counts = reasons.map(reason_kind).value_counts()
    return {str(kind): int(n) for kind, n in sorted(counts.items())}


# --------------------------------------------------------------------------------------------
# Output


class OutputInsideRootError(StageError, ValueError):
    """``--out`` lies inside ``--root``."""


def _refuse_output_inside(root: Path, out: Path) -> None:
    """The root is read-only to this stage; writing outputs into it would change the next run."""
    if Path(os.path.abspath(out)).resolve().is_relative_to(Path(os.path.abspath(root)).resolve()):
        raise OutputInsideRootError(
            f"the output folder {out} lies inside the dataset root {root}; pick another"
        )


def _failure_line(root: Path, layout: str, rejected: list[tuple[str, str]], where: Path) -> str:
    if not rejected:
        return f"no usable clip: layout '{layout}' found no candidate clip under {root}"
    counts = _reason_counts(pd.Series([reason for _, reason in rejected], dtype=str))
    top = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
    return f"no usable clip under {root}: {len(rejected)} file(s) quarantined ({top}); see {where}"


def _fail(out: Path, rejected: list[tuple[str, str]], message: str) -> None:
    """Remove the outputs of an earlier run (they no longer describe the root; the manifest
    first, so no kill leaves it beside the new quarantine), then write the quarantine."""
    for stale in (out / MANIFEST_NAME, out / STATS_NAME):
        stale.unlink(missing_ok=True)
    write_csv_atomic(
        pd.DataFrame(sorted(rejected), columns=["path", "reason"]), out / QUARANTINE_NAME
    )
    raise NoUsableClipsError(" ".join(message.split()))


def _csv_writer(frame: pd.DataFrame) -> Callable[[Path], object]:
    return lambda tmp: frame.to_csv(tmp, index=False, encoding="utf-8")


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, _csv_writer(frame))


def publish(out: Path, outputs: list[tuple[Path, Callable[[Path], object]]]) -> None:
    """Put ``outputs`` in place as one generation; the last of them (the manifest) is the
    commit mark.

    Every file is written and synced under a hidden temporary first; then the previous
    mark is removed, the others renamed in, and the mark renamed in last. A kill at any point
    leaves either the whole previous set, or no manifest at all (DVC and every later stage
    then see ingest as not done): never a new quarantine beside an old manifest.
    """
    for final, _ in outputs:
        _remove_dead_temporaries(final)
    staged: list[tuple[Path, Path]] = []
    try:
        for final, write in outputs:
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            staged.append((tmp, final))
            write(tmp)
            fsync_path(tmp, os.O_RDONLY)
        mark = outputs[-1][0]
        mark.unlink(missing_ok=True)
        fsync_folder(out)
        for tmp, final in staged:
            os.replace(tmp, final)
        fsync_folder(out)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _remove_dead_temporaries(final: Path) -> None:
    """Temporaries of ``final`` that a killed run left (their process is gone)."""
    for tmp in final.parent.glob(f".{final.name}.*.tmp"):
        pid = tmp.name[len(final.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def main(
    params: Params,
    *,
    root: Path,
    out: Path,
    layout: str,
    dataset: str | None = None,
    taxonomy: str = "emotions6",
) -> None:
    """`emotions ingest`: the manifest of ``root`` in ``layout``, with a one-line summary."""
    name = params.dataset(dataset).taxonomy if dataset else taxonomy
    options = SourceOptions()
    if dataset:
        entry = params.dataset(dataset)
        options = SourceOptions(entry.splits, entry.split_index, entry.fps)
    try:
        result = ingest(
            root,
            out,
            layout=layout,
            taxonomy=dict(params.taxonomies[name]),
            config=params.ingest,
            options=options,
            aliases=params.aliases_of(name),
        )
    except NoUsableClipsError as error:
        raise StageError(str(error)) from None
    print(
        f"ingest: {len(result.manifest)} usable clips, {len(result.quarantine)} quarantined "
        f"-> {out / MANIFEST_NAME}"
    )
    if "official_split" in result.stats:
        kept = result.stats["official_split"]["kept"]
        print(f"ingest: official split {kept['train']} train, {kept['test']} test clips")
    line = listed_missing_line(result.stats)
    if line:
        print(f"ingest: {line}")
