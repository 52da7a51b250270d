"""The model's and the loss's settings schema.

Defined here rather than in ``emotions.config`` so the models stay independent of the params
file (docs/DESIGN.md: models take tensors and know nothing of how they are configured or trained);
the config can embed these classes as its ``model:`` and ``loss:`` sections unchanged. Like every
params section they forbid unknown keys, so a typo is an error instead of a silent default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Normalisation the torchvision Video Swin Kinetics-400 weights were trained with (their
# transforms use the ImageNet statistics); kept as the default so such weights see what they expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VideoArch = Literal["tiny", "swin3d_t", "swin3d_s", "swin3d_b"]
AudioSize = Literal["tiny", "small", "base"]
Modality = Literal["both", "video", "audio"]
# The registered fusions (emotions.models.fusions) and audio branches (emotions.models.audio);
# listed here too so params validate without importing torch. A test keeps them equal.
Fusion = Literal["concat", "local", "global", "lgfm", "pyramid", "mpam"]
AudioArch = Literal["ast", "resnet18", "resnet34", "authors_resnet34"]
# separate: one head on the fused embedding, auxiliary heads on each branch (ours); shared: one
# Linear on [audio; video] whose halves give the modality logits (the authors' ConcatFusion).
Head = Literal["separate", "shared"]
# How the Video Swin blocks compute window attention (emotions.models.window_attention).
VideoAttention = Literal["sdpa", "flex", "torchvision"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VideoSettings(_Strict):
    """Video Swin Transformer branch."""

    arch: VideoArch = "tiny"
    # A local checkpoint (never downloaded); None = random init. Its key layout: torchvision's
    # Swin3d (Kinetics), swin2d (an ImageNet Swin, timm or original keys, inflated to 3D),
    # video_swin (the original / mmaction2 Video Swin); auto tells them apart by their keys.
    weights: str | None = None
    weights_layout: Literal["auto", "torchvision", "swin2d", "video_swin"] = "auto"
    # The last feature map is average-pooled to spatial_pool × spatial_pool tokens per temporal
    # position: enough tokens for cross-attention to pick regions, few enough to stay cheap.
    spatial_pool: int = Field(2, ge=1)
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    # sdpa: one fused scaled_dot_product_attention per block with the bias and shift mask folded
    # into one cached mask; flex: one FlexAttention call per block, the bias gathered from its
    # table and the shift mask applied inside the kernel (no dense mask; fast only on a GPU
    # under train.compile, the CPU runs it as sdpa's composite); torchvision: its attention as
    # written (the benchmark's baseline). Same parameters for all three, so weights and
    # checkpoints move between them.
    attention: VideoAttention = "sdpa"
    # Pixels in [0, 1] become (x − mean) / std. Default: ImageNet's. The authors' AVNet.forward
    # computes x / 255 − 100 / 255 (VisualStream._init_norm_val): mean 100/255 per channel,
    # std 1 (params/authors-published.yaml).
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # per_snippet: Swin runs on each of the model's `windows` snippets as a clip of its own, so
    # no attention window crosses a snippet; each snippet is pooled to one token (spatial mean,
    # dropout `snippet_dropout`, temporal mean) and projected to model.dim, as AVNet.forward
    # does (AvgPool3d, Dropout(0.5), mean, Linear(768, 512)). false: one pass over the clip.
    per_snippet: bool = False
    snippet_dropout: float = Field(0.5, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _std_positive(self) -> VideoSettings:
        if min(self.std) <= 0:
            raise ValueError(f"video.std must be positive (got {self.std})")
        return self


class AudioSettings(_Strict):
    """The audio branch: an AST-style spectrogram transformer or a per-snippet ResNet."""

    # ast: one ViT over the whole log-mel (size/patch/stride below); resnet18/34: timm's
    # ResNet with one input channel over each of `segments` equal time slices; authors_resnet34:
    # the authors' ResNet-34 ((7, 1) stem, Linear + BatchNorm1d + Tanh; models/audio_net.py).
    arch: AudioArch = "ast"
    segments: int = Field(4, ge=1)
    size: AudioSize = "tiny"
    patch: int = Field(16, ge=2)
    # stride < patch gives AST's overlapping patches (AST uses 10); = patch is cheaper.
    stride: int = Field(16, ge=1)
    # The spectrogram size the position embeddings are created for; other lengths are served
    # by interpolating them, so a clip of another length still runs.
    mel_bins: int = Field(128, ge=2)
    frames: int = Field(400, ge=2)
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    # A local timm ViT / AST checkpoint (never downloaded); None = random init.
    weights: str | None = None
    # ast: the AST branch rescales its input to AST's (fbank − ast_mean) / (2 · ast_std) (use it
    # with AST weights); dataset: it takes the loader's dataset-normalised log-mel as is.
    input_norm: Literal["dataset", "ast"] = "dataset"
    ast_mean: float = -4.2677393  # AudioSet, from the AST recipes
    ast_std: float = Field(4.5689974, gt=0)
    # authors_resnet34: width of the Linear + BatchNorm1d + Tanh after the ResNet (AVNet.a_fc;
    # opts.py --audio_embed_size 512).
    embed: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _geometry(self) -> AudioSettings:
        if self.stride > self.patch:
            raise ValueError(
                f"audio.stride ({self.stride}) exceeds audio.patch ({self.patch}): bins skipped"
            )
        if min(self.mel_bins, self.frames) < self.patch:
            raise ValueError(
                f"audio.patch ({self.patch}) is larger than the spectrogram "
                f"({self.mel_bins} mel bins × {self.frames} frames)"
            )
        return self


class ModelSettings(_Strict):
    """AV-CANet: branches, fusion and their sizes."""

    modality: Modality = "both"
    fusion: Fusion = "lgfm"
    # Equal-duration time windows the clip is cut into for local fusion and the timeline.
    windows: int = Field(4, ge=1)
    dim: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    local_depth: int = Field(1, ge=1)
    global_depth: int = Field(1, ge=1)
    # Pyramid fusion: level i attends within blocks of 2^(i+1) windows (snippets).
    pyramid_levels: int = Field(2, ge=1)
    mlp_ratio: float = Field(2.0, gt=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    head: Head = "separate"
    # mpam only (emotions.models.fusions.mpam): feed-forward width of its attention layers
    # (unknown in the authors' code: AVNet never builds its MPAM; 4 × dim is our guess) and the
    # dropout on its sublayers and inside its attention (MultimodalPyramidAttentionalModule's
    # dropout=0.5 and MultiHeadAttention's dropout=0.1).
    mpam_ffn: int | None = Field(None, ge=1)
    mpam_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    mpam_attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    video: VideoSettings = VideoSettings()
    audio: AudioSettings = AudioSettings()

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ModelSettings:
        if self.dim % self.heads:
            raise ValueError(
                f"model.dim ({self.dim}) is not divisible by model.heads ({self.heads})"
            )
        return self

    @model_validator(mode="after")
    def _shared_head_needs_two_halves(self) -> ModelSettings:
        if self.head == "shared" and (self.modality != "both" or self.fusion != "mpam"):
            raise ValueError(
                "model.head 'shared' splits one Linear over [audio; video] clip vectors: it "
                "needs modality 'both' and fusion 'mpam' (the fusion that hands both over)"
            )
        return self


class PolarityLambda(_Strict):
    """Extra weight of a polarity mistake, per polarity of the true class (EP-CE reweight)."""

    positive: float = Field(0.5, ge=0.0)
    neutral: float = Field(0.5, ge=0.0)
    negative: float = Field(0.5, ge=0.0)


LossForm = Literal["soft", "reweight"]


class LossSettings(_Strict):
    """The training objective: EP-CE in one of two forms, plus auxiliary and window terms.

    ``form: soft`` is our differentiable EP-CE (CE + w_pol · polarity CE + w_opp · opposite
    mass; CE is the case w_pol = w_opp = 0). ``form: reweight`` is the authors' form: per-sample
    CE × (1 + lambda[polarity of the truth]) when the argmax's polarity differs from the truth's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    form: LossForm = "soft"
    w_pol: float = Field(0.5, ge=0.0)
    w_opp: float = Field(0.5, ge=0.0)
    # For a neutral truth, the share of the positive + negative mass that is penalised.
    neutral_opp_weight: float = Field(0.5, ge=0.0, le=1.0)
    # `lambda` in params.yaml (a Python keyword, hence the alias).
    lambda_: PolarityLambda = Field(PolarityLambda(), alias="lambda")
    # Weak supervision of the local stage: each window's logits are also trained towards the
    # clip label with this weight, so the per-window timeline means something. 0 disables it.
    window_weight: float = Field(0.25, ge=0.0)
    # Cross-entropy of the audio-only and video-only heads, added to the fused loss (the
    # authors sum the three with weight 1; see params.yaml for the CPU defaults). A clip
    # without audio adds no audio term.
    aux_audio: float = Field(0.3, ge=0.0)
    aux_video: float = Field(0.3, ge=0.0)
    # What the audio-only and video-only terms are: fused, the criterion (EP-CE or PCCE) on the
    # fused logits only and plain CE on the modality heads (ours); all, the same criterion on
    # all three heads (the authors' train_epoch: loss(out) + loss(out_v) + loss(out_a)).
    apply_to: Literal["fused", "all"] = "fused"


def without_weights(settings: ModelSettings) -> ModelSettings:
    """The same architecture with no pretrained-weights files.

    For rebuilding a trained model whose checkpoint holds every weight: the Kinetics/ImageNet
    files named at training time need not exist where the model is evaluated or served.
    """
    return settings.model_copy(
        update={
            "video": settings.video.model_copy(update={"weights": None}),
            "audio": settings.audio.model_copy(update={"weights": None}),
        }
    )


def paper_size() -> ModelSettings:
    """The paper-scale configuration: Swin-T on 32×224×224, AST-base on 1024×128 (stride 10)."""
    return ModelSettings(
        dim=512,
        heads=8,
        local_depth=1,
        global_depth=2,
        video=VideoSettings(arch="swin3d_t", spatial_pool=7, drop_path=0.1),
        audio=AudioSettings(size="base", patch=16, stride=10, frames=1024, mel_bins=128),
    )
