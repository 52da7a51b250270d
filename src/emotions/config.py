"""Typed parameters loaded from params.yaml.

One schema for DVC and the code: DVC reads the same file for its ``params:`` dependencies, and
every stage validates it here first, so a typo (an unknown key) or a wrong type stops the run
with a message that names the key instead of surfacing as a KeyError deep in a stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from emotions.corpus.labels import normalise_label
from emotions.layout import Layout as ArtifactLayout
from emotions.models.settings import Fusion, LossSettings, ModelSettings

Polarity = Literal["positive", "negative", "neutral"]
Layout = Literal["emotions", "videoemotion8", "ekman6", "folder", "csv", "release", "frames"]
VariantName = Literal["full", "balanced", "test", "official"]
# Layouts whose adapter reads UCF101-style split lists (trainlistNN.txt / testlistNN.txt).
LIST_LAYOUTS: tuple[str, ...] = ("release", "frames", "videoemotion8", "ekman6")


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


class Strict(BaseModel):
    """Base for every params section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthConfig(Strict):
    """The sample-corpus generator (`emotions synth`)."""

    clips_per_class: int = Field(40, ge=1)
    seed: int = 7
    duration_s: tuple[float, float] = (2.0, 4.0)
    width: int = Field(96, ge=16)
    height: int = Field(160, ge=16)
    fps: int = Field(15, ge=1)
    audio_sample_rate: int = 16000
    conflict_share: float = Field(0.1, ge=0.0, le=1.0)
    annotators_stage1: int = Field(5, ge=1)
    annotators_stage2: int = Field(3, ge=1)
    platforms: list[str] = ["douyin", "kuaishou", "tiktok"]


class IngestConfig(Strict):
    """Probing and annotation aggregation."""

    workers: int = Field(2, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_file_mb: float = Field(512.0, gt=0)
    # A clip whose first-stage agreement is below this went to (or needs) the second stage.
    second_stage_below: float = Field(0.6, ge=0.0, le=1.0)
    extensions: list[str] = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".flv"]
    # What a clip is (emotions.media.clipcheck): a file outside these inclusive bounds goes to
    # quarantine with the bound in its reason, and `serve` refuses such an upload (422). The
    # validate stage checks the manifest against these same keys (no second copy of them).
    duration_s: tuple[float, float] = (0.5, 600.0)
    fps: tuple[float, float] = (5.0, 240.0)
    min_frames: int = Field(4, ge=1)
    # The shorter side must reach min_side; no side may exceed max_side (a header declaring a
    # bigger picture is refused before anything is decoded).
    min_side: int = Field(32, ge=1)
    max_side: int = Field(8192, ge=1)
    # Pixels × frames one clip may cost to decode, counting every frame a seek decodes from
    # the keyframe before a sampled one (emotions.media.clipcheck.check_decode_cost): the
    # cache, `serve` (422) and `emotions predict` refuse a clip over it before decoding it.
    # 8 Gpx: about 3900 frames of 1080p, so a 2-minute 1080p30 download encoded with x264's
    # default keyframe interval (250 frames), which decodes nearly whole, still passes; the
    # 4096² one-keyframe attack (57 Gpx) does not. Lower it on a public endpoint.
    max_decode_pixels: int = Field(8_000_000_000, ge=1)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> IngestConfig:
        for name in ("duration_s", "fps"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"ingest.{name} must be [low, high] with 0 <= low <= high")
        if self.min_side > self.max_side:
            raise ValueError("ingest.min_side must not exceed ingest.max_side")
        return self


class ValidateConfig(Strict):
    """Great Expectations suite thresholds over the manifest.

    The duration, frame-rate, frame-count and size bounds are ingest's (``ingest.duration_s``
    and friends): ingest quarantines every clip outside them, and validate checks that the
    manifest keeps to them.
    """

    min_audio_share: float = Field(0.5, ge=0.0, le=1.0)
    min_clips_per_class: int = Field(5, ge=1)
    # A clip with a broken audio packet is kept (the packet is skipped); more than this share
    # of such clips is reported (a warning: GX `mostly` tolerates the rest).
    max_bad_audio_share: float = Field(0.05, ge=0.0, le=1.0)


class SplitShares(Strict):
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, gt=0.0, lt=1.0)


class TestVariantConfig(Strict):
    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.4, gt=0.0, lt=1.0)
    # Test clips are drawn only from clips at least this well agreed on.
    min_agreement: float = Field(0.8, ge=0.0, le=1.0)


class OfficialVariantConfig(Strict):
    """The authors' train/test lists; only the validation share is ours (carved from train)."""

    val: float = Field(0.1, ge=0.0, lt=1.0)


class VariantsConfig(Strict):
    """The eMotions family of splits."""

    full: SplitShares = SplitShares()
    balanced: SplitShares = SplitShares()
    test: TestVariantConfig = TestVariantConfig()
    official: OfficialVariantConfig = OfficialVariantConfig()


class AudioFeatures(Strict):
    # log_mel (ours): Kaldi log-mel on the clip's time base, aligned with the frames.
    # looped_mfcc: VAANet's input, which the authors' audio layers' shapes fit (inferred,
    # emotions.media.mfcc): n_mels MFCCs (32) at sample_rate (44100), hop 512, the clip's
    # sound looped from its start to target_frames rows (4096), not aligned with the frames.
    features: Literal["log_mel", "looped_mfcc"] = "log_mel"
    sample_rate: int = 16000
    n_mels: int = Field(128, ge=8)  # looped_mfcc: the MFCC count
    frame_shift_ms: float = 10.0  # log_mel only
    frame_length_ms: float = 25.0  # log_mel only
    # Log-mel rows per clip: the whole clip's log-mel (10 ms shift) resampled along time onto
    # these equal steps of its duration (emotions.media.decode), the frames' time base.
    target_frames: int = Field(400, ge=16)


class PreprocessConfig(Strict):
    """Decode-once cache."""

    # Frames of one view (T): snippets × snippet_frames (emotions.media.snippets).
    num_frames: int = Field(8, ge=1)
    # TSN sampling: the clip is cut into num_frames / snippet_frames equal segments and each
    # gives a run of snippet_frames consecutive frames (1: the middle frame of each segment).
    snippet_frames: int = Field(1, ge=1)
    # Candidate runs per segment kept in the cache (odd; the middle one is the evaluation
    # view). Training draws one per segment and epoch: temporal jitter; the cache's frames
    # grow by this factor.
    positions: int = Field(1, ge=1)
    # Short side is resized to `resize`, then a centre `crop` square is kept.
    resize: int = Field(72, ge=8)
    crop: int = Field(64, ge=8)
    frame_sampling: Literal["exact", "keyframe"] = "exact"
    audio: AudioFeatures = AudioFeatures()
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    # A Dask scheduler address ("tcp://host:8786"); null runs local worker processes.
    dask_address: str | None = None
    # How frames are stored: raw uint8 memmap, or one JPEG per frame (several times smaller,
    # decoded in the DataLoader workers) in content-named shards of about shard_mb.
    cache_format: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = Field(90, ge=1, le=100)
    shard_mb: float = Field(256.0, gt=0)

    @model_validator(mode="after")
    def _crop_fits(self) -> PreprocessConfig:
        if self.crop > self.resize:
            raise ValueError(
                f"preprocess.crop ({self.crop}) exceeds preprocess.resize ({self.resize})"
            )
        return self

    @model_validator(mode="after")
    def _snippets_fit(self) -> PreprocessConfig:
        if self.num_frames % self.snippet_frames:
            raise ValueError(
                f"preprocess.num_frames ({self.num_frames}) must be a multiple of "
                f"preprocess.snippet_frames ({self.snippet_frames}): snippets × frames each"
            )
        if self.positions % 2 == 0:
            raise ValueError(
                f"preprocess.positions ({self.positions}) must be odd: the middle position is "
                "the segment centre, the evaluation's view"
            )
        if self.frame_sampling == "keyframe" and (self.snippet_frames > 1 or self.positions > 1):
            raise ValueError(
                "preprocess.frame_sampling 'keyframe' takes one keyframe per segment: it needs "
                "snippet_frames 1 and positions 1 (consecutive frames need 'exact')"
            )
        return self


class ScheduleConfig(Strict):
    """The lr schedule's shape (emotions.training.schedule); its warm-up length is
    ``train.warmup_epochs``.

    The defaults are ours: linear warm-up from 0.05 × lr, cosine to 0, changed every optimizer
    step. The authors' ``get_lr_scheduler`` (AV-CANet/core/utils.py) is ``warmup: quadratic``,
    ``start_factor: 0.1``, ``floor: 0.01``, ``floor_epochs: 1.5``, ``step: epoch``.
    """

    form: Literal["cosine", "constant"] = "cosine"
    warmup: Literal["linear", "quadratic"] = "linear"
    # The warm-up starts at start_factor × lr.
    start_factor: float = Field(0.05, ge=0.0, le=1.0)
    # cosine: the decay ends at floor × lr and stays there for the last floor_epochs epochs.
    floor: float = Field(0.0, ge=0.0, le=1.0)
    floor_epochs: float = Field(0.0, ge=0.0)
    # step: a new lr every optimizer step; epoch: one lr per epoch (epochs counted from 1).
    step: Literal["step", "epoch"] = "step"

    @model_validator(mode="after")
    def _floor_needs_cosine(self) -> ScheduleConfig:
        if self.form == "constant" and (self.floor or self.floor_epochs):
            raise ValueError("train.schedule.floor and floor_epochs apply to form 'cosine' only")
        return self


class TrainConfig(Strict):
    """The optimisation loop (AdamW, warm-up + a schedule, early stopping on val weighted F1)."""

    epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    # Warm-up length in epochs (fractional allowed); 0: none. Its shape: schedule below.
    warmup_epochs: float = Field(1.0, ge=0)
    schedule: ScheduleConfig = ScheduleConfig()
    # Max global gradient norm; null: no clipping (the authors' main_final_delay.py clips none).
    grad_clip: float | None = Field(1.0, gt=0)
    patience: int = Field(4, ge=1)
    # DataLoader worker processes; "auto" = from the CPU count on CUDA (one core left for the
    # training process, shared among the node's ranks, at most 16), 0 on CPU, where
    # in-process loading keeps runs deterministic and cheap.
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # Batches each worker loads ahead (only with workers).
    prefetch_factor: int = Field(4, ge=1)
    # Loss read back to the host (progress bar) every N steps; never per step (a device sync).
    log_every_n_steps: int = Field(50, ge=1)
    # A resumable checkpoint every N optimizer steps, besides the one per epoch; null = off.
    checkpoint_every_n_steps: int | None = Field(None, ge=1)
    # jpeg caches: decode the training frames in the loader workers, or batched on the
    # training device (nvJPEG on CUDA: the workers then only slice bytes). auto = on the device
    # when it is CUDA and train.spatial is ours (the authors' crops transform on the host).
    jpeg_decode: Literal["auto", "worker", "device"] = "auto"
    # Move (and, for device-decoded jpeg, decode) the next batches on the training device in a
    # background thread while the step runs (emotions.training.prefetch). auto = on CUDA.
    device_prefetch: Literal["auto"] | bool = "auto"
    # The spatial sampling of a clip's frames (emotions.training.transforms): ours, a random
    # crop square of the cached square + flip p 0.5 (centre crop to evaluate); authors, the
    # full short side at the centre or a corner resized to the crop + one of flip / rotation /
    # brightness at p 0.3 (the full short side, centre, to evaluate).
    spatial: Literal["ours", "authors"] = "ours"
    # Dense peak TFLOP/s for the MFU figure where the device table has none (CPU, other GPUs).
    peak_tflops: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # torch.compile the training model. auto = on for a CUDA run of at least
    # compile_auto_min_steps optimizer steps, where the fused kernels repay their warm-up of a
    # few minutes; off for a shorter run and on CPU, where inductor's C++ build of the whole
    # model takes longer than a small run trains.
    compile: Literal["auto"] | bool = "auto"
    compile_auto_min_steps: int = Field(1500, ge=0)
    # torch.compile backend: inductor (fused kernels, the one to train with); aot_eager traces
    # forward and backward the same way without generating code (how the CPU test runs it).
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    # inductor's mode: default | reduce-overhead (CUDA graphs: fewer kernel launches, more
    # memory) | max-autotune (also times matmul/conv kernels at warm-up: the longest warm-up).
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    channels_last: bool = True
    spec_augment_time: int = Field(40, ge=0)
    spec_augment_freq: int = Field(16, ge=0)
    # torch intra-op threads; null keeps torch's default (all cores).
    threads: int | None = Field(None, ge=1)
    # Parameter groups (src/emotions/training/optim.py): the branches' lr is lr × backbone_lr_mult;
    # layer_decay (e.g. 0.75) additionally scales a branch layer's lr by decay^(depth from top).
    backbone_lr_mult: float = Field(1.0, gt=0)
    layer_decay: float | None = Field(None, gt=0, le=1)
    # Micro-batches per optimizer step (effective batch = batch_size × accumulate × ranks).
    accumulate: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _compile_mode_needs_inductor(self) -> TrainConfig:
        # torch.compile hands a mode to any other backend as an argument it does not take.
        if self.compile_mode != "default" and self.compile_backend != "inductor":
            raise ValueError(
                f"train.compile_mode '{self.compile_mode}' needs train.compile_backend "
                f"'inductor' (got '{self.compile_backend}')"
            )
        return self


# How a run trains rather than what it learns: the only `train.*` fields the ablation shares
# with the runs (dvc.yaml's `ablate` stage depends on exactly these).
TRAIN_EXECUTION_FIELDS = (
    "num_workers",
    "prefetch_factor",
    "log_every_n_steps",
    "checkpoint_every_n_steps",
    "jpeg_decode",
    "device_prefetch",
    "peak_tflops",
    "device",
    "precision",
    "compile",
    "compile_auto_min_steps",
    "compile_backend",
    "compile_mode",
    "channels_last",
    "threads",
)


class CalibrationConfig(Strict):
    """Temperature scaling (the `calibrate` stage), fitted on the validation split only.

    A temperature is only trusted where the validation split can determine it: with too few
    clips, or clips the model already separates perfectly, validation NLL keeps falling as
    T → 0 and an unbounded fit returns a degenerate near-one-hot model. The fit therefore
    searches ``bounds`` only, rejects an optimum that lands on a bound (no interior minimum:
    the data did not decide), and keeps T only if it lowers validation NLL by ``min_gain``.
    """

    # Fewer validation clips than this: T = 1 (a handful of clips cannot pin a temperature).
    min_clips: int = Field(20, ge=1)
    # The search range of T. Guo et al. (2017, "On Calibration of Modern Neural Networks")
    # report fitted temperatures of about 1-3 for overconfident networks; under-confident
    # small models go below 1. The range leaves room for both and nothing degenerate.
    bounds: tuple[float, float] = (0.25, 8.0)
    # The smallest validation-NLL improvement (nats per clip) that keeps a fitted T.
    min_gain: float = Field(1e-4, ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> CalibrationConfig:
        low, high = self.bounds
        if not 0 < low < 1 < high:
            raise ValueError(
                f"calibration.bounds must satisfy 0 < low < 1 < high, got {self.bounds}"
            )
        return self


class EvaluateConfig(Strict):
    ece_bins: int = Field(15, ge=2)
    calibration: CalibrationConfig = CalibrationConfig()
    # Test clips whose annotators agreed at least this much form the "high agreement" group
    # the report compares with the rest (the variants' test.min_agreement default, 0.8).
    high_agreement: float = Field(0.8, ge=0.0, le=1.0)
    # Test-time views averaged (logits) per clip: evenly shifted cached positions (at most
    # preprocess.positions); 1 is the centre view. Calibration fits on the same average.
    views: int = Field(1, ge=1)
    # val_selected: the test score of the epoch validation chose (ours, unbiased). authors:
    # that too, and beside it the score the authors' main_final_delay.py reports: every epoch
    # scored on the test split with random views (random offset and crop position, no
    # augmentation), the best epoch's. Train then also scores the test split each epoch.
    protocol: Literal["val_selected", "authors"] = "val_selected"


AblationLoss = Literal["ce", "soft", "reweight"]


class AblationCell(Strict):
    """One ablation cell: ce (plain cross-entropy), soft (our EP-CE), reweight (the authors').

    ``epce``, the name of ``soft`` before the authors' form existed, is still accepted.
    """

    modality: Literal["both", "video", "audio"] = "both"
    fusion: Fusion = "lgfm"
    loss: AblationLoss = "soft"

    @field_validator("loss", mode="before")
    @classmethod
    def _old_loss_name(cls, value: object) -> object:
        return "soft" if value == "epce" else value


class AblateConfig(Strict):
    """Which run the ablation retrains, over which cells, and how many seeds per cell.

    The default is one factor at a time around the full model (modality, fusion, loss), which
    answers the paper's questions at a fraction of the 54-cell full matrix; `full_matrix: true`
    trains every combination. With `seeds: N` each cell is trained N times (seeds seed,
    seed + 1, …) and reported as mean ± std, so a difference within the seed noise of a small
    test split is not read as a finding.

    The ablation has its own training recipe, so a `train.*` experiment retrains the runs and
    not the ablation: ``epochs`` and ``seed`` here, and ``train``, overrides of the recipe
    fields of :class:`TrainConfig` over its defaults. Only the execution fields of `train`
    (:data:`TRAIN_EXECUTION_FIELDS`: device, precision, workers, compile, ...) are shared, and
    dvc.yaml's `ablate` stage lists exactly those (a test keeps the two equal).
    """

    dataset: str = "emotions"
    variant: VariantName = "full"
    full_matrix: bool = False
    cells: list[AblationCell] = [
        AblationCell(),
        AblationCell(modality="video"),
        AblationCell(modality="audio"),
        AblationCell(fusion="concat"),
        AblationCell(fusion="local"),
        AblationCell(fusion="global"),
        AblationCell(fusion="pyramid"),
        AblationCell(loss="ce"),
        AblationCell(loss="reweight"),
    ]
    # Epoch budget per cell, and the first seed (seed, seed + 1, ... with `seeds` > 1).
    epochs: int = Field(12, ge=1)
    seed: int = 42
    seeds: int = Field(1, ge=1)
    # Recipe overrides over TrainConfig's defaults (lr, batch_size, weight_decay, ...).
    train: dict[str, Any] = {}

    @field_validator("train")
    @classmethod
    def _recipe_fields_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        shared = sorted(set(value) & {*TRAIN_EXECUTION_FIELDS, "epochs"})
        if shared:
            raise ValueError(
                f"{', '.join(shared)}: set in train (execution) or ablate.epochs, not here"
            )
        try:
            TrainConfig(**value)
        except ValidationError as error:  # unknown keys and bad values, by name
            problems = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError("; ".join(problems)) from None
        return value

    def train_config(self, shared: TrainConfig) -> TrainConfig:
        """The ablation's TrainConfig: its recipe, ``shared``'s execution fields."""
        execution = {name: getattr(shared, name) for name in TRAIN_EXECUTION_FIELDS}
        return TrainConfig(**{**self.train, **execution, "epochs": self.epochs})


class AnnotateConfig(Strict):
    """Label Studio as the annotation tool (`emotions queue push|pull`, src/emotions/annotation/labelstudio).

    Label Studio runs as its own server (`make annotate`, its own virtual environment
    ``.venv-ls``); we talk to its REST API with a token read from the environment variable
    ``token_env``, so the token never sits in a file git tracks.
    """

    url: str = "http://127.0.0.1:8080"
    token_env: str = "LABEL_STUDIO_API_KEY"
    # The project the queue is pushed to (created on first push, its labeling config kept in
    # step with the taxonomy afterwards).
    project: str = "emotions re-annotation"
    # The dataset whose taxonomy the annotators choose from and whose annotations.csv the new
    # stage follows (stage = its highest stage + 1).
    dataset: str = "emotions"
    # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT of the server: task URLs are paths relative to
    # it, so the queue must lie below it (`make annotate` sets it to the repository).
    document_root: str = "."
    timeout_s: float = Field(60.0, gt=0)
    page_size: int = Field(100, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _queue_dir_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "queue_dir" in data:
            raise ValueError(
                "annotate.queue_dir is gone: push reads the queue folder from queue.out "
                "(one key for the queue folder); move its value there"
            )
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"annotate.url must start with http:// or https:// (got {value!r})")
        return value.rstrip("/")


class FlowConfig(Strict):
    """The Prefect flows (flows/): retries, concurrency, the retrain schedule and promotion gate.

    Read only by flows/, never by a stage, and no stage lists `flow` under `params:`, so tuning
    the orchestration never invalidates a DVC stage.
    """

    # Attempts after the first for a stage that failed transiently (see flows/pipeline.py).
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(10.0, ge=0)
    # Independent stages running at once (each is one `dvc repro --single-item` process).
    concurrency: int = Field(2, ge=1)
    # How long a flow run waits for another flow run on the same repository to finish.
    lock_wait_s: float = Field(600.0, ge=0)
    # Longest run of one stage task (`dvc repro` of one stage, a refresh, a re-score): the
    # task ends TimedOut and its process is killed. `dvc exp run` (the whole DAG) gets its own.
    stage_timeout_s: float = Field(3600.0, gt=0)
    experiment_timeout_s: float = Field(14400.0, gt=0)
    retrain_cron: str = "0 3 * * 1"
    # The monitor deployment's schedule (`make schedule`): the drift check of the prediction log.
    monitor_cron: str = "0 * * * *"
    # The champion/challenger gate: this run's test metric decides, by at least this margin.
    promote_run: str = "emotions-full"
    promote_metric: Literal["accuracy", "weighted_f1", "macro_f1", "polarity_accuracy"] = (
        "weighted_f1"
    )
    promote_margin: float = Field(0.01, ge=0)


class ServeConfig(Strict):
    """The BentoML service (src/emotions/serve) and the `package` stage that builds its Bento.

    Environment variables override the deployment-specific keys at serve time
    (``EMOTIONS_MODEL_DIR``, ``EMOTIONS_PREDICTION_LOG``, ``EMOTIONS_MAX_UPLOAD_MB``), so one
    Bento runs anywhere without editing its params.
    """

    # The trained run to serve: its model folder is artifacts/models/<dataset>/<variant>.
    run: str = "emotions-full"
    # A BentoML model tag served instead of the folder. `emotions package` pins it in the
    # Bento's own copy of params.yaml, so a Bento serves exactly the model it was built with.
    model_tag: str | None = None
    # Request bodies above this are refused with 413 before they are read into memory.
    max_upload_mb: float = Field(64.0, gt=0)
    # An upload must have one of these file extensions and, when its part declares a content
    # type, one matching these patterns; anything else is refused with 415.
    extensions: list[str] = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".flv"]
    content_types: list[str] = ["video/*", "application/octet-stream"]
    # Micro-batching of the model's forward pass across concurrent requests: a batch closes
    # when it is full, when no other request is still decoding, or when its first clip has
    # waited max_latency_ms. auto (here and for decode_workers): 8, 25 ms and 2 on a CPU; on
    # another device measured at service start from the model's own forward
    # (emotions.serve.sizing).
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    max_latency_ms: Literal["auto"] | Annotated[float, Field(ge=0)] = "auto"
    # Where the forward pass runs (auto: CUDA when torch sees one) and in which precision
    # (auto: bf16 autocast on CUDA, fp32 on CPU). `emotions predict --device` overrides it.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Which batcher shares the forward passes (batch_size 1 turns batching off with either):
    # "micro", the service's own (emotions.serve.batcher), or "bentoml", BentoML's adaptive
    # batching of an inner batchable API the endpoint calls (benchmarks/serve.py compares them).
    batcher: Literal["micro", "bentoml"] = "micro"
    # Decoder processes per service worker; a decode slower than decode_timeout_s is killed.
    decode_workers: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    decode_timeout_s: float = Field(30.0, gt=0)
    # torch intra-op threads of the forward pass in each service worker. More than one pays
    # only on dedicated cores: with a core busy elsewhere, torch's threads wait on each other
    # (measured here: 35 ms with 1 thread, 400-900 ms with 2 on a loaded 2-core machine).
    torch_threads: int = Field(1, ge=1)
    # The whole request body must arrive within this, else 408 and the connection is closed:
    # a stalled or trickling (slowloris) client holds a request slot no longer than this.
    body_timeout_s: float = Field(30.0, gt=0)
    # BentoML worker processes; a request not answered within timeout_s gets 504.
    workers: int = Field(1, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    # Requests being processed at once per service (split over the workers) before 503 with
    # Retry-After: retry_after_s. A slot is taken only once the whole body has arrived, so
    # slow or stalled uploads never hold one.
    max_concurrency: int = Field(32, ge=1)
    retry_after_s: int = Field(2, ge=1)
    # Bytes of request bodies one worker holds at once (arrived, not yet answered; beyond 64
    # KiB each they sit in temporary files): beyond it 503 with Retry-After, so a flood of
    # large uploads cannot fill the disk. Must hold at least one max_upload_mb body.
    max_pending_body_mb: float = Field(1024.0, gt=0)
    # Request heads (request line + headers): larger than max_header_kb or with more than
    # max_headers headers get 431; a head not complete within header_timeout_s of the
    # connection (or of the previous answer) gets 408 and the connection is closed.
    max_header_kb: float = Field(32.0, gt=0)
    max_headers: int = Field(100, ge=1)
    header_timeout_s: float = Field(10.0, gt=0)
    # Open connections per worker (kept 256 under the file limit, raised at start as far as
    # the hard limit allows); a new one beyond closes the oldest one still sending its head.
    max_connections: int = Field(4096, ge=1)
    # Refused requests logged per second (a burst of refused_log_burst is always taken);
    # beyond that they are counted, and the count is logged as one "dropped" record.
    refused_log_per_s: float = Field(20.0, gt=0)
    refused_log_burst: int = Field(200, ge=1)
    # GET /model shows absolute paths (model folder, calibration, prediction log) only when on.
    show_paths: bool = False
    # The append-only prediction log (JSON lines); `~` expands to the serving user's home.
    log_path: str = str(ArtifactLayout().serve_dir / "predictions.jsonl")
    # Keep every answered upload for the re-annotation queue (`emotions queue`), stored by its
    # sha256 under upload_store (a repeat costs nothing) and named in its log line (`stored`).
    # Oldest first out beyond the quota or the retention age; a full store never fails a request.
    keep_uploads: bool = False
    upload_store: str = str(ArtifactLayout().serve_dir / "uploads")
    upload_quota_mb: float = Field(2048.0, gt=0)
    upload_retention_days: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _dotted_extensions(self) -> ServeConfig:
        bad = [ext for ext in self.extensions if not ext.startswith(".") or ext != ext.lower()]
        if bad:
            raise ValueError(f"serve.extensions must be lower-case and start with '.': {bad}")
        if self.max_pending_body_mb < self.max_upload_mb:
            raise ValueError(
                f"serve.max_pending_body_mb ({self.max_pending_body_mb:g}) must hold one "
                f"upload of serve.max_upload_mb ({self.max_upload_mb:g})"
            )
        if self.body_timeout_s > self.timeout_s:
            # BentoML's own timeout would answer first, with a 5xx instead of our 408.
            raise ValueError("serve.body_timeout_s must not exceed serve.timeout_s")
        return self


class MonitorConfig(Strict):
    """The drift monitor (`emotions monitor`, flows/monitor.py): the live prediction log
    against the served run's reference split, and when a drift triggers a retrain."""

    # Share of monitored checks (input statistics, predicted label, confidence, embeddings)
    # that must drift before the monitor flow starts a retrain.
    threshold: float = Field(0.3, gt=0.0, le=1.0)
    # Fewer answered requests than this are too few to test: the monitor says so and stops.
    min_rows: int = Field(30, ge=2)
    out: str = str(ArtifactLayout().monitor_dir)
    # Local Evidently UI workspace every report is added to (`evidently ui --workspace ...`).
    workspace: str = str(ArtifactLayout().monitor_dir / "workspace")
    # The split of the served run that stands for "what the model was validated on".
    reference_split: Literal["train", "val", "test"] = "val"
    # Rows per side the report's t-SNE picture of the embeddings is drawn from (its cost does
    # not depend on the log's size, but is minutes at Evidently's own 2,500); the embedding
    # drift score uses every row.
    embedding_plot_rows: int = Field(250, ge=31)
    # OpenMP/BLAS threads of the report's numeric code (t-SNE): more only on idle cores.
    threads: int = Field(1, ge=1)


class QueueConfig(Strict):
    """The re-annotation queue (`emotions queue`, also after each monitor drift check): which
    kept uploads (serve.keep_uploads) go to annotators, by which rule (emotions.annotation.rules)."""

    # Each run writes one queue folder <out>/<UTC time>/ in the `emotions` layout.
    out: str = str(ArtifactLayout().queue_dir)
    # At most this many clips per run, the random control included.
    max_clips: int = Field(40, ge=1)
    # low_confidence: clips whose served confidence is below this.
    max_confidence: float = Field(0.6, gt=0.0, le=1.0)
    # modality_disagreement: total-variation distance between the audio-only and the
    # video-only probabilities (the auxiliary heads) of at least this.
    min_modality_disagreement: float = Field(0.3, ge=0.0, le=1.0)
    # window_disagreement: total-variation distance between the two most different timeline
    # windows of at least this.
    min_window_disagreement: float = Field(0.3, ge=0.0, le=1.0)
    # drifted_slice: clips beyond this reference quantile (on the side the traffic moved to)
    # of a feature the monitor found drifted.
    drift_tail: float = Field(0.1, gt=0.0, lt=0.5)
    # Share of max_clips drawn at random from all kept clips (a control; at least one if > 0).
    random_share: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    # The monitor flow builds a queue after each drift check.
    after_monitor: bool = True


class RunConfig(Strict):
    """One trained model: a dataset and one of its variants."""

    dataset: str
    variant: VariantName


class DatasetConfig(Strict):
    """One dataset the pipeline runs on."""

    layout: Layout
    root: str
    taxonomy: str = "emotions6"
    variants: list[VariantName] = ["full"]
    # Split lists (layouts in LIST_LAYOUTS): the folder holding classInd.txt, trainlistNN.txt
    # and testlistNN.txt (relative paths are taken from the root; null: <root>/splits), and NN.
    splits: str | None = None
    split_index: int = Field(1, ge=1, le=99)
    # Frame folders (layout `frames`): frames per second, or "audio" for n_frames divided by
    # the audio's duration (30 when a clip has no audio).
    fps: float | Literal["audio"] = 30.0

    @model_validator(mode="after")
    def _official_needs_lists(self) -> DatasetConfig:
        if "official" in self.variants and self.layout not in LIST_LAYOUTS:
            raise ValueError(
                f"variant 'official' needs split lists, which layout '{self.layout}' does not "
                f"read (layouts with lists: {', '.join(LIST_LAYOUTS)})"
            )
        if isinstance(self.fps, float | int) and self.fps <= 0:
            raise ValueError(f"fps must be positive (got {self.fps})")
        return self


class Params(Strict):
    """Everything in params.yaml."""

    seed: int = 42
    taxonomies: dict[str, dict[str, Polarity]]
    # taxonomy → {alias: class}: extra spellings ingest accepts for a class (see label_aliases_for).
    label_aliases: dict[str, dict[str, str]] = {}
    datasets: dict[str, DatasetConfig]
    synth: SynthConfig = SynthConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    variants: VariantsConfig = VariantsConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelSettings = ModelSettings()
    loss: LossSettings = LossSettings()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    # Named (dataset, variant) pairs that get a train + evaluate stage each.
    runs: dict[str, RunConfig] = {}
    ablate: AblateConfig = AblateConfig()
    annotate: AnnotateConfig = AnnotateConfig()
    flow: FlowConfig = FlowConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    queue: QueueConfig = QueueConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _aliases_name_classes(self) -> Params:
        check_label_aliases(self.taxonomies, self.label_aliases)
        return self

    @model_validator(mode="after")
    def _taxonomies_exist(self) -> Params:
        for name, dataset in self.datasets.items():
            if dataset.taxonomy not in self.taxonomies:
                raise ValueError(
                    f"datasets.{name}.taxonomy: '{dataset.taxonomy}' is not one of "
                    f"taxonomies ({', '.join(sorted(self.taxonomies))})"
                )
        for name, run in self.runs.items():
            if run.dataset not in self.datasets:
                raise ValueError(f"runs.{name}.dataset: '{run.dataset}' is not under datasets")
            if run.variant not in self.datasets[run.dataset].variants:
                raise ValueError(
                    f"runs.{name}.variant: '{run.variant}' is not among "
                    f"datasets.{run.dataset}.variants"
                )
        if self.ablate.dataset not in self.datasets:
            raise ValueError(f"ablate.dataset: '{self.ablate.dataset}' is not under datasets")
        if self.ablate.variant not in self.datasets[self.ablate.dataset].variants:
            raise ValueError(
                f"ablate.variant: '{self.ablate.variant}' is not among "
                f"datasets.{self.ablate.dataset}.variants"
            )
        return self

    @model_validator(mode="after")
    def _spatial_decodes_on_the_host(self) -> Params:
        deferred = self.preprocess.cache_format == "jpeg" and self.train.jpeg_decode == "device"
        if self.train.spatial != "ours" and deferred:
            raise ValueError(
                f"train.spatial '{self.train.spatial}' transforms frames in the loader: it "
                "needs train.jpeg_decode 'worker' with a jpeg cache"
            )
        return self

    @model_validator(mode="after")
    def _snippets_are_the_windows(self) -> Params:
        pre, model = self.preprocess, self.model
        snippets = pre.num_frames // pre.snippet_frames
        if model.video.per_snippet and model.modality != "audio" and snippets != model.windows:
            raise ValueError(
                f"model.video.per_snippet runs Swin on each of model.windows ({model.windows}) "
                f"snippets, but the cache cuts preprocess.num_frames ({pre.num_frames}) into "
                f"{snippets} runs of preprocess.snippet_frames ({pre.snippet_frames})"
            )
        return self

    @model_validator(mode="after")
    def _views_are_cached(self) -> Params:
        if self.evaluate.views > self.preprocess.positions:
            raise ValueError(
                f"evaluate.views ({self.evaluate.views}) exceeds preprocess.positions "
                f"({self.preprocess.positions}): each view is one cached position per segment"
            )
        return self

    def run(self, name: str) -> RunConfig:
        try:
            return self.runs[name]
        except KeyError:
            known = ", ".join(sorted(self.runs)) or "none"
            raise ConfigError(f"unknown run '{name}' (params.yaml defines: {known})") from None

    def taxonomy_for(self, dataset: str) -> dict[str, Polarity]:
        """Class → polarity mapping of a dataset, in the declared class order."""
        return dict(self.taxonomies[self.dataset(dataset).taxonomy])

    def label_aliases_for(self, dataset: str) -> dict[str, str]:
        """Declared alias → class (the taxonomy's spelling) of a dataset's taxonomy."""
        return self.aliases_of(self.dataset(dataset).taxonomy)

    def aliases_of(self, taxonomy: str) -> dict[str, str]:
        """Declared alias → class of one taxonomy, targets spelled exactly as the taxonomy does."""
        by_form = {normalise_label(name): name for name in self.taxonomies.get(taxonomy, {})}
        declared = self.label_aliases.get(taxonomy, {})
        return {alias: by_form[normalise_label(target)] for alias, target in declared.items()}

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ConfigError(f"unknown dataset '{name}' (params.yaml defines: {known})") from None


def check_label_aliases(
    taxonomies: Mapping[str, Mapping[str, str]], aliases: Mapping[str, Mapping[str, str]]
) -> None:
    """Every alias belongs to a known taxonomy, points at one of its classes and is not itself
    the name of another class (which would make a label mean two things)."""
    for taxonomy, table in aliases.items():
        if taxonomy not in taxonomies:
            raise ValueError(
                f"label_aliases.{taxonomy}: not one of taxonomies ({', '.join(sorted(taxonomies))})"
            )
        classes = {normalise_label(name): name for name in taxonomies[taxonomy]}
        for alias, target in table.items():
            if normalise_label(target) not in classes:
                raise ValueError(
                    f"label_aliases.{taxonomy}.{alias}: '{target}' is not a class of "
                    f"{taxonomy} ({', '.join(taxonomies[taxonomy])})"
                )
            owner = classes.get(normalise_label(alias))
            if owner is not None and normalise_label(owner) != normalise_label(target):
                raise ValueError(
                    f"label_aliases.{taxonomy}.{alias}: '{alias}' is already the class "
                    f"'{owner}', it cannot also mean '{target}'"
                )


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} problem(s)"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {item['msg']}{_got(item)}")
    return "\n".join(lines)


SHOWN_INPUT_CHARS = 80


def _got(item: Any) -> str:
    """The offending value, short: a check spanning keys (a section or the whole file) would
    otherwise print all of it."""
    value = item.get("input")
    if not item["loc"] or isinstance(value, dict):
        return ""
    shown = repr(value)
    if len(shown) > SHOWN_INPUT_CHARS:
        shown = shown[: SHOWN_INPUT_CHARS - 1] + "…"
    return f" (got {shown})"


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate an already-parsed mapping; raises ConfigError naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def read_yaml(path: str | Path, missing_hint: str = "") -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing, unparsable or non-mapping file is a
    ConfigError naming the file (params.yaml and the params overlays read through here)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found{missing_hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    raw = read_yaml(path, " (run from the repository root or pass --params)")
    return parse_params(raw, str(path))
