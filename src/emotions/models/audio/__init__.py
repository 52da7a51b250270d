"""Audio branches, one module each, registered by ``settings.audio.arch`` name.

Every branch maps a normalised log-mel (B, A, M), and optionally ``valid_frames`` (B,), the rows
holding sound (the rest is zero padding), to tokens (B, L, D) and their time centres (L,) as
fractions of the clip, and exposes ``dim``; the fusion needs nothing else. A branch that mixes
time positions (the AST's attention) must keep padding from being read by the sound's tokens.
``AudioBackbone`` (the AST-style ViT) keeps its historical import path.
"""

from emotions.models.audio.ast_vit import AUDIO_SIZES, AudioBackbone, StridedPatchEmbed

__all__ = ["AUDIO_SIZES", "AudioBackbone", "StridedPatchEmbed"]
