"""The BentoML service: ``POST /predict`` a video, get the `emotions predict` JSON for it.

    bentoml serve emotions.serve.service:EmotionService      (or `emotions serve`, `make serve`)

One code path with the command line: the upload is decoded by ``decode_clip`` and classified by
:class:`emotions.serve.predictor.Predictor`, so a served answer equals `emotions predict` on the same
file (``path`` is the name the client uploaded). Around it:

- hostile clients: request heads over ``serve.max_header_kb`` / ``serve.max_headers`` get 431,
  heads slower than ``serve.header_timeout_s`` 408 (:mod:`emotions.serve.httpguard`, below
  ASGI); bodies over ``serve.max_upload_mb`` 413 before they are read, bodies slower than
  ``serve.body_timeout_s`` 408, a form that is not one file field ``video`` 400, all before a
  concurrency slot is taken; no free slot 503 with ``Retry-After``; no answer within
  ``serve.timeout_s`` 504 (:mod:`emotions.serve.gate`);
- content: other file types, still images and sound-only files 415; a clip outside ingest's
  bounds or a file that does not decode 422, judged from its header before decoding
  (:mod:`emotions.serve.limits`); every refusal is ``{"error": code, "detail": text}``;
- throughput: decoding runs in a pool of killable processes (:mod:`emotions.serve.decoding`),
  and concurrent requests share forward passes: the service's own micro-batcher
  (:mod:`emotions.serve.batcher`), or with ``serve.batcher: bentoml`` BentoML's adaptive batching
  of the inner batchable API ``forward_batch`` the endpoint calls;
- monitoring: every request to ``/predict`` and every refusal anywhere is one line of the
  prediction log, answered ones with the input statistics and the clip embedding, refused ones
  rate-limited with the count of those not written (:mod:`emotions.serve.accounting`);
- with ``serve.keep_uploads``, answered uploads are kept by content hash for the re-annotation
  queue, bounded by a quota and a retention age (:mod:`emotions.serve.upload_store`);
- ``GET /model`` describes the loaded model (no absolute paths unless ``serve.show_paths``);
  BentoML answers ``/healthz``, ``/livez``, ``/readyz`` (503 while no slot is free) and
  ``/metrics``; ``/docs.json`` is the completed OpenAPI document (:mod:`emotions.serve.openapi`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from fastapi import FastAPI
from starlette.responses import JSONResponse

from emotions import model_folder
from emotions.layout import Layout
from emotions.media.decode import DecodedClip
from emotions.serve import accounting, httpguard, openapi
from emotions.serve.accounting import Accountant
from emotions.serve.batcher import MicroBatcher
from emotions.serve.decoding import DecodeFailed, DecoderPool
from emotions.serve.gate import Admission, BodyBudget, Gate
from emotions.serve.limits import (
    INTERNAL_ERROR,
    Rejection,
    check_upload,
    missing_video,
)
from emotions.serve.model_store import METRICS_FILE
from emotions.serve.prediction_log import (
    PredictionLog,
    error_record,
    prediction_record,
)
from emotions.serve.predictor import Predictor, summarise_input
from emotions.serve.settings import (
    CALIBRATION_ENV,
    ModelSource,
    load_settings,
    resolve_model,
    served_model_tag,
)
from emotions.serve.sizing import Sizing, resolve_sizing, static_batch_size
from emotions.serve.upload import UploadedVideo, clean_orphans
from emotions.serve.upload_store import Kept, UploadStore, store_root

logger = logging.getLogger("emotions.serve")
# The start lines (model, sizes): BentoML's server logging passes INFO only for its own
# "bentoml" tree (the root stays at WARNING), so they go through a child of it, with its format,
# its stream and its level (--quiet, --debug).
start_log = logging.getLogger("bentoml.emotions")

# Read at import: BentoML takes workers, timeouts and middleware from the class definition.
SETTINGS = load_settings()
PREDICTION_LOG = PredictionLog(SETTINGS.log_path)
ACCOUNTANT = Accountant(
    PREDICTION_LOG,
    per_s=SETTINGS.config.refused_log_per_s,
    burst=SETTINGS.config.refused_log_burst,
)
# This worker's share of serve.max_concurrency, as BentoML would split it.
ADMISSION = Admission(math.ceil(SETTINGS.config.max_concurrency / SETTINGS.config.workers))
# BentoML's own request timeout only backs ours up (the gate answers 504 in our shape first).
BACKSTOP_S = 5.0
httpguard.install(
    httpguard.ConnectionLimits(
        max_head_bytes=int(SETTINGS.config.max_header_kb * 1024),
        max_headers=SETTINGS.config.max_headers,
        header_timeout_s=SETTINGS.config.header_timeout_s,
        max_connections=SETTINGS.config.max_connections,
    ),
    ACCOUNTANT,
)
# The BentoML model the service is built on (None: a plain folder, see served_model_tag).
MODEL_TAG = served_model_tag(SETTINGS)
BENTOML_BATCHING = SETTINGS.config.batcher == "bentoml"
UPLOAD_STORE = (
    UploadStore(
        store_root(SETTINGS.config.upload_store, SETTINGS.log_path),
        quota_mb=SETTINGS.config.upload_quota_mb,
        retention_days=SETTINGS.config.upload_retention_days,
    )
    if SETTINGS.config.keep_uploads
    else None
)

# One forward pass's answer for one clip: the result, its embedding and its modality views.
Forwarded = tuple[dict[str, Any], np.ndarray, dict[str, Any]]

info_app = FastAPI(title="emotions", docs_url=None, redoc_url=None, openapi_url=None)


def read_metrics(model_dir: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's test metrics: packaged beside the model, or where `evaluate` writes them."""
    candidates = [model_dir / METRICS_FILE]
    if meta.get("dataset") and meta.get("variant"):
        candidates.append(Layout().metrics(str(meta["dataset"]), str(meta["variant"])))
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return None
    return None


# A GPU is asked for only when serve.device says cuda: BentoML then gives each worker one
# (CUDA_VISIBLE_DEVICES) and the Bento records it; with `auto` the service takes a GPU when
# torch sees one, and asks the platform for none.
RESOURCES: dict[str, Any] = {"gpu": 1} if SETTINGS.config.device == "cuda" else {}


@bentoml.service(
    name="emotions",
    description=openapi.DESCRIPTION,
    workers=SETTINGS.config.workers,
    **({"resources": RESOURCES} if RESOURCES else {}),
    # No max_concurrency here: BentoML's limit would sit in front of the body timeout, so
    # stalled uploads would hold its slots; the gate takes a slot once a body is complete.
    traffic={"timeout": SETTINGS.config.timeout_s + BACKSTOP_S},
)
@bentoml.asgi_app(info_app, path="/")
class EmotionService:
    """AV-CANet behind HTTP: one upload in, one `emotions predict` answer out."""

    if MODEL_TAG:
        # BentoML 1.4's model reference: `bentoml build` pins this version into the Bento
        # (and `bentoml containerize` ships it); reading the attribute resolves it from the
        # model store.
        served_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import torch

        config = SETTINGS.config
        clean_orphans()  # uploads of a worker killed mid-request
        torch.set_num_threads(config.torch_threads)
        if MODEL_TAG:
            stored = self.served_model
            self.source: ModelSource = ModelSource(Path(stored.path), "bentoml", str(stored.tag))
        else:
            self.source = resolve_model(SETTINGS)
        self.predictor = Predictor(
            self.source.path,
            device=config.device,
            precision=config.precision,
            calibration=os.environ.get(CALIBRATION_ENV) or None,
        )
        # serve.batch_size / max_latency_ms / decode_workers: auto measured here on a GPU.
        self.sizing: Sizing = resolve_sizing(config, self.predictor)
        start_log.info("%s", self.sizing.describe())
        self.decoder = DecoderPool(
            self.predictor.preprocess,
            workers=self.sizing.decode_workers,
            timeout_s=config.decode_timeout_s,
            bounds=SETTINGS.clip_bounds,
        )
        self.decoder.warm_up()
        self.batcher: MicroBatcher[DecodedClip, Forwarded] = MicroBatcher(
            self._forward,
            max_batch_size=self.sizing.batch_size,
            max_latency_s=self.sizing.max_latency_ms / 1000.0,
        )
        # Clips waiting for BentoML's batcher, by request id (serve.batcher: bentoml).
        self._staged: dict[str, DecodedClip] = {}
        self.log = PREDICTION_LOG
        meta = self.predictor.meta
        self.model_name = self.source.tag or str(meta.get("run", self.source.path.name))
        self.description = {
            "run": meta.get("run"),
            "dataset": meta.get("dataset"),
            "variant": meta.get("variant"),
            "source": {
                "origin": self.source.origin,
                "path": _shown(self.source.path),
                "tag": self.source.tag,
            },
            "checkpoint_sha256": model_folder.checkpoint_sha256(
                model_folder.weights(self.source.path)
            ),
            # The temperature the clip probabilities are divided by, and its file (None: T=1).
            "calibration": {
                "temperature": self.predictor.temperature,
                "source": _shown(self.predictor.calibration_source),
            },
            "classes": self.predictor.classes,
            "polarity": dict(zip(self.predictor.classes, self.predictor.polarity, strict=True)),
            "modalities": list(self.predictor.modalities),
            "device": str(self.predictor.device),
            "precision": "bf16" if self.predictor.placement.bf16 else "fp32",
            "model": meta.get("model"),
            "preprocess": meta.get("preprocess"),
            "metrics": read_metrics(self.source.path, meta),
            "limits": {
                "max_upload_mb": config.max_upload_mb,
                "extensions": config.extensions,
                "content_types": config.content_types,
                "body_timeout_s": config.body_timeout_s,
                "timeout_s": config.timeout_s,
                "max_concurrency": config.max_concurrency,
                "max_header_kb": config.max_header_kb,
                "max_headers": config.max_headers,
            },
            "batching": {"batcher": config.batcher, **self.sizing.report()},
            "prediction_log": _shown(SETTINGS.log_path),
        }
        start_log.info(
            "serving %s from %s (%s)", self.model_name, self.source.path, self.source.origin
        )

    def _forward(self, clips: list[DecodedClip]) -> list[Forwarded]:
        results, embeddings, views = self.predictor.predict_clips_with_views(clips)
        return list(zip(results, embeddings, views, strict=True))

    if BENTOML_BATCHING:

        @bentoml.api(
            route="/forward-batch",
            batchable=True,
            batch_dim=0,
            # Declared at import, before a model is loaded: auto is the CPU default here.
            max_batch_size=static_batch_size(SETTINGS.config.batch_size),
            # BentoML's bound on a call's whole latency, not the wait for company: a forward
            # pass longer than it would make the dispatcher refuse with 503, so the request
            # timeout bounds it and the dispatcher chooses its waits itself.
            max_latency_ms=int(SETTINGS.config.timeout_s * 1000),
        )
        def forward_batch(self, keys: list[str]) -> list[dict[str, Any]]:
            """One forward pass for the staged clips of a batch of requests (``predict`` calls
            this through the service's own client; BentoML merges concurrent calls). Only a
            request id travels: the decoded clip waits in this worker's memory, since the
            arguments are serialised as for an HTTP call. Unknown ids answer an error."""
            clips = {key: self._staged.pop(key, None) for key in keys}
            known = [key for key, clip in clips.items() if clip is not None]
            outputs = self._forward([clips[key] for key in known]) if known else []
            answers = {
                key: {
                    "result": result,
                    "embedding": vector.tolist(),
                    "views": views,
                    "batch_size": len(known),
                }
                for key, (result, vector, views) in zip(known, outputs, strict=True)
            }
            return [answers.get(key, {"error": f"no staged clip {key}"}) for key in keys]

    async def _infer(
        self, expected: Any, clip: DecodedClip, request_id: str
    ) -> tuple[Forwarded, int]:
        """The forward pass of one clip through the configured batcher: ``((result,
        embedding, views), batch size)``."""
        if not BENTOML_BATCHING:
            return await expected.submit(clip)
        self._staged[request_id] = clip
        try:
            (answer,) = await self.to_async.forward_batch([request_id])  # type: ignore[attr-defined]
        finally:
            self._staged.pop(request_id, None)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        embedding = np.asarray(answer["embedding"], dtype=np.float32)
        return (answer["result"], embedding, answer["views"]), int(answer["batch_size"])

    def __is_ready__(self) -> bool:
        """/readyz: 200 only while an upload would be taken now (a slot is free)."""
        return ADMISSION.free > 0

    def _record(self, record: dict[str, Any]) -> None:
        """Leave the request's log record to the gate (which writes one per request); outside
        a gated request (a direct call), write it here."""
        account = accounting.current()
        if account is not None:
            account.record = record
        elif record.get("status") == "ok":
            ACCOUNTANT.answered(record)
        else:
            ACCOUNTANT.refused(record)

    def _refuse(
        self,
        rejection: Rejection,
        request_id: str,
        started: float,
        video: UploadedVideo | None = None,
    ) -> JSONResponse:
        self._record(
            error_record(
                request_id=request_id,
                rejection=rejection,
                filename=None if video is None else video.filename,
                size_bytes=None if video is None else video.size,
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
        )
        return JSONResponse(rejection.body(), status_code=rejection.status)

    @bentoml.api(route="/predict")
    async def predict(self, video: UploadedVideo = None) -> dict[str, Any]:  # type: ignore[assignment]
        """Emotion, polarity, probabilities, per-segment timeline and modality share of one
        uploaded video (multipart field ``video``), as `emotions predict` prints it."""
        # `video` defaults to None (not Optional[...]) so the schema stays a plain file field
        # for BentoML's UI and client, and a missing field becomes our 400, not a schema error.
        account = accounting.current() or accounting.RequestAccount()
        started, request_id = account.started, account.request_id
        if video is None:
            return self._refuse(missing_video(), request_id, started)
        try:
            rejection = check_upload(
                video.filename, video.content_type, video.size, SETTINGS.config
            )
            if rejection is not None:
                return self._refuse(rejection, request_id, started, video)
            with self.batcher.expect() as expected:
                try:
                    clip = await self.decoder.decode(video, video.filename)
                except DecodeFailed as error:  # 415/422: not a clip, or does not decode
                    return self._refuse(error.rejection, request_id, started, video)
                try:
                    (result, embedding, views), batch_size = await self._infer(
                        expected, clip, request_id
                    )
                except Exception as error:
                    logger.exception("prediction failed for %s", video.filename)
                    rejection = Rejection(
                        500, INTERNAL_ERROR, f"prediction failed: {type(error).__name__}"
                    )
                    return self._refuse(rejection, request_id, started, video)
            kept = await self._keep(video)
        finally:
            video.discard()
        answer = {"path": video.filename, **result}
        self._record(
            prediction_record(
                request_id=request_id,
                filename=video.filename,
                result=result,
                stats=summarise_input(clip),
                embedding=embedding,
                model=self.model_name,
                size_bytes=video.size,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                batch_size=batch_size,
                views=views,
                stored=None if kept is None else kept.key,
                sha256=None if kept is None else kept.sha256,
            )
        )
        return answer

    async def _keep(self, video: UploadedVideo) -> Kept | None:
        """Keep an answered upload (serve.keep_uploads); hashing and copying run off the
        event loop, and a failure only means it is not kept."""
        if UPLOAD_STORE is None:
            return None
        return await asyncio.to_thread(UPLOAD_STORE.put, video, video.filename)

    @info_app.get("/model")
    def model(self) -> dict[str, Any]:
        """What is being served: run, classes, where the weights came from, test metrics."""
        return self.description

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.batcher.close()
        self.decoder.close()
        ACCOUNTANT.close()
        self.log.close()


def _shown(path: str | Path | None) -> str | None:
    """A path as /model shows it: its last part only, unless serve.show_paths."""
    if path is None:
        return None
    return str(path) if SETTINGS.config.show_paths else Path(path).name


EmotionService.add_asgi_middleware(
    Gate,
    accountant=ACCOUNTANT,
    admission=ADMISSION,
    max_bytes=SETTINGS.max_upload_bytes,
    bodies=BodyBudget(int(SETTINGS.config.max_pending_body_mb * 2**20)),
    body_timeout_s=SETTINGS.config.body_timeout_s,
    timeout_s=SETTINGS.config.timeout_s,
    retry_after_s=SETTINGS.config.retry_after_s,
    openapi=openapi.completed(lambda: EmotionService.openapi_spec.asdict()),
)
