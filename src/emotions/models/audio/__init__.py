"""Audio branches, one module each, registered by ``settings.audio.arch`` name.

Every branch maps a normalised log-mel (B, A, M) to tokens (B, L, D) and their time centres
(L,) as fractions of the clip, and exposes ``dim``; the fusion needs nothing else.
``AudioBackbone`` (the AST-style ViT) keeps its historical import path.
"""

from emotions.models.audio.ast_vit import AUDIO_SIZES, AudioBackbone, StridedPatchEmbed

__all__ = ["AUDIO_SIZES", "AudioBackbone", "StridedPatchEmbed"]
