"""The params with every option that states the authors' model on, at the tiny CPU size.

Per-snippet Swin, their audio branch, the mpam fusion with the shared head and their criterion
on all three heads: what the meta-device and compile tests run beside the ablation matrix.
"""

from __future__ import annotations

from emotions.config import Params, parse_params


def authors_options(base: Params) -> Params:
    """``base`` with the authors' model options on (4 snippets of 2 frames, tiny sizes)."""
    raw = base.model_dump(mode="json", by_alias=True)
    raw["preprocess"].update(num_frames=8, snippet_frames=2)
    raw["model"].update(fusion="mpam", head="shared", windows=4)
    raw["model"]["video"]["per_snippet"] = True
    raw["model"]["audio"].update(arch="authors_resnet34", segments=4)
    raw["loss"].update(form="reweight", apply_to="all", aux_audio=1.0, aux_video=1.0)
    return parse_params(raw, "authors options")
