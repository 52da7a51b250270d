"""The manifest's schema and the clip id: what ingest writes and every later stage reads.

The first columns are the contract (docs/DESIGN.md, "Contracts"); the extra ones are facts the
probe found that validation, variants and the report use.
"""

from __future__ import annotations

MANIFEST_COLUMNS = (
    "clip_id",
    "path",
    "label",
    "polarity",
    "duration_s",
    "fps",
    "n_frames",
    "width",
    "height",
    "has_audio",
    "audio_sample_rate",
    "audio_channels",
    "sha256",
    "agreement",
    "platform",
)


EXTRA_COLUMNS = (
    "size_bytes",
    "video_codec",
    "audio_codec",
    "rotation",
    "visual_hash",
    "n_votes",
    "deciding_stage",
    "audio_bad_packets",
    # The split list naming the clip ("train", "test"), null when none does (or no lists).
    "official_split",
)


DTYPES = {
    "clip_id": "string",
    "path": "string",
    "label": "string",
    "polarity": "string",
    "duration_s": "float64",
    "fps": "float64",
    "n_frames": "int64",
    "width": "int64",
    "height": "int64",
    "has_audio": "bool",
    "audio_sample_rate": "Int64",
    "audio_channels": "Int64",
    "sha256": "string",
    "agreement": "float64",
    "platform": "string",
    "size_bytes": "int64",
    "video_codec": "string",
    "audio_codec": "string",
    "rotation": "int64",
    "visual_hash": "string",
    "n_votes": "Int64",
    "deciding_stage": "Int64",
    "audio_bad_packets": "int64",
    "official_split": "string",
}


CLIP_ID_HEX = 16


def clip_id_for(sha256: str) -> str:
    """The stable clip id: a prefix of the content hash, so renaming a file never changes it."""
    return sha256[:CLIP_ID_HEX]
