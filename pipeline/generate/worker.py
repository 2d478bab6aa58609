"""One shard end to end, in a plain class (no Ray): the Ray actor in orchestrate.py wraps it, and
`executor: inline` and the benchmarks call it directly.

    __init__: load the pipeline and the CLIP scorer once (heavy objects are built here, in the
              process that uses them, never pickled from the driver)
    process(shard):
      1. read the shard's rows (range read of the overlapping row groups)
      2. rows -> samples: derive ids, validate, screen, expand images_per_prompt and mitigation
      3. per bucketed batch: generate (uint8 on device) -> CLIP score on the device tensor, then copy
         to host and PNG-encode in a thread pool while the next batch generates
      4. append rows to the part in row groups as they fill (memory bounded by the batch)
      5. commit: publish the part atomically, then its marker (``Output.commit_part``)
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from pipeline.core import retry
from pipeline.core.job import ResolvedJob
from pipeline.core.storage import Output, filesystem
from pipeline.generate import families
from pipeline.generate.accel import apply as apply_accel
from pipeline.generate.diffusion import Generator, Sample, make_batches
from pipeline.generate.inputs import Shard, read_rows, row_limits
from pipeline.generate.models import load_pipeline
from pipeline.generate.partwriter import PHASH_FIELD, PartWriter, embedding_field, encode_png
from pipeline.generate.samples import expand
from pipeline.probes.image import ImageProbes
from pipeline.probes.safety import PromptScreen
from pipeline.probes.scorer import resolve_device_dtype

MAX_PENDING_BATCHES = 2  # batches encoding while the next one generates: bounds host memory


@dataclass
class Batch:
    """One bucketed batch between step 3 (generated, scored, encodes started) and step 4 (collected)."""

    samples: list  # Sample, in batch order
    result: object  # diffusion.GenerateResult: device images, per-sample errors, seconds
    scores: dict | None  # CLIP / probe / quality columns, one value per sample
    futures: list  # PNG encode futures (None where generation failed); replaced by results on collect
    score_seconds: float  # this batch's scoring + host copy overhead

    def rows(self):
        """The arguments of PartWriter.add_batch."""
        return self.samples, self.result, self.scores, self.futures, self.score_seconds


def build_generator(cfg, device, dtype):
    """(pipeline, accel report, Generator) exactly as a run's worker makes images: the model with its
    scheduler, LoRA and speed levers (accel.py: fuse, layout, fp8, compile), unique-prompt encoding
    (null = on for CUDA) and batch padding. `sdgen verify` regenerates through this too."""
    g = cfg.generation
    pipe = load_pipeline(
        cfg.model,
        dtype,
        device,
        g.scheduler,
        cfg.storage,
        cfg.lora,
        cfg.single_file_config,
        None if g.family == "auto" else g.family,
        cfg.accel.cpu_offload,
    )
    accel = apply_accel(pipe, cfg, device)
    unique = cfg.accel.encode_unique_prompts
    unique = device.type == "cuda" if unique is None else unique
    pad = g.batch_size if g.compile and cfg.accel.pad_batches else None
    return pipe, accel, Generator(pipe, device, dtype, unique, pad, g.max_sequence_length, g.true_cfg_scale)


class ShardWorker:
    def __init__(self, job: ResolvedJob, worker_id: str = "0"):
        cfg = job.config
        self.job, self.cfg, self.worker_id = job, cfg, worker_id
        retry.configure(cfg.retry)  # this process's storage calls (an actor's own process)
        self.device, self.dtype = resolve_device_dtype(
            cfg.generation.device, cfg.generation.dtype, families.cuda_dtype(cfg.generation.family)
        )
        # CLIP scores in the dtype the audit re-scores with (float16 on CUDA), whatever the model's
        _, score_dtype = resolve_device_dtype(cfg.generation.device, cfg.generation.dtype)
        t0 = time.perf_counter()
        self.pipe, self.accel, self.generator = build_generator(cfg, self.device, self.dtype)
        self.scorer = None
        if cfg.scoring.enabled:
            from pipeline.probes.scorer import ClipScorer

            self.scorer = ClipScorer(
                cfg.scoring.clip_model, cfg.scoring.clip_weights, self.device, score_dtype
            )
        self.probes = None
        if self.scorer is not None and job.probed:
            self.probes = ImageProbes(
                self.scorer, list(job.attribute_sets), job.concept_list, cfg.safety.sd_checker
            )
        self.screen = PromptScreen.load(cfg.safety.screening) if cfg.safety.screening else None
        self.extra_fields = (self.probes.fields() if self.probes else []) + (
            [pa.field("source_prompt", pa.string()), pa.field("mitigation_variant", pa.string())]
            if cfg.mitigation.enabled
            else []
        )
        self.extra_fields += [PHASH_FIELD] if cfg.write.phash else []
        if cfg.write.embeddings:
            self.extra_fields.append(embedding_field(self.scorer.embed_dim()))
        self.aesthetic = None
        if cfg.scoring.aesthetic_weights:
            from pipeline.probes.quality import AestheticScorer

            self.aesthetic = AestheticScorer(
                cfg.scoring.aesthetic_weights, self.scorer.embed_dim(), self.device
            )
            self.extra_fields.append(pa.field("aesthetic", pa.float32()))
        self.preference = None
        if cfg.scoring.preference_model:
            from pipeline.probes.quality import PreferenceScorer

            self.preference = PreferenceScorer(
                cfg.scoring.preference_model, cfg.scoring.preference_weights, self.scorer
            )
            self.extra_fields.append(pa.field("preference", pa.float32()))
        self.load_seconds = time.perf_counter() - t0
        self.scheduler_name = type(self.pipe.scheduler).__name__
        steps = job.train_timesteps  # resolved on the driver; a hub model's from its loaded scheduler
        steps = getattr(self.pipe.scheduler.config, "num_train_timesteps", None) if steps is None else steps
        self.limits = row_limits(cfg, steps)  # what every row of every shard is checked against
        self.output = Output(cfg.output, cfg.storage)
        self.in_fs = filesystem(cfg.input, cfg.storage)[0]
        self.pool = ThreadPoolExecutor(cfg.write.encode_threads, thread_name_prefix="png")
        self.batches_done = 0
        self.on_batch = (
            None  # called with each batch's image count once generated (progress; Ray actor sets it)
        )

    # ---- 2-5. the shard ------------------------------------------------------------------------------------
    def process(self, shard: Shard, attempt: int = 1) -> dict:
        """One shard, start to commit; returns its marker. Any exception leaves nothing behind (the
        spool is removed) and the driver retries the whole shard."""
        t0 = time.perf_counter()
        # 1. read the shard's rows (only the row groups that overlap it)
        table = read_rows(
            self.output.fs if shard.in_output else self.in_fs, shard.file, shard.start, shard.stop
        )
        # 2. rows -> samples: ids, duplicates, invalid rows, screening, mitigation variants
        rows = expand(table, shard, self.cfg, self.screen, self.limits)
        writer = PartWriter(self.output, shard.name, table, self.cfg, self.scheduler_name, self.extra_fields)
        timings = {"read": time.perf_counter() - t0, "generate": 0.0, "score": 0.0, "encode": 0.0}
        for bad in rows.invalid:
            writer.add_invalid(bad.row, bad.prompt_id, bad.prompt, bad.reason)
        for sample, reason in rows.blocked:
            writer.add_blocked(sample, reason)
        pending: deque = deque()
        try:
            # 3. per bucketed batch: generate + CLIP score on the device, start host copy + PNG encodes
            # 4. collect finished batches into the part's row groups (memory bounded by the batch)
            for batch in make_batches(
                rows.samples, self.cfg.generation.batch_size, self.generator.by_negative
            ):
                pending.append(self._submit(batch, timings))
                self._maybe_die()
                while len(pending) > MAX_PENDING_BATCHES:
                    writer.add_batch(*self._collect(pending.popleft(), timings).rows())
            while pending:
                writer.add_batch(*self._collect(pending.popleft(), timings).rows())
            fields = writer.finish()
        except BaseException:
            writer.abort()  # no half-written spool files left behind; the shard is retried whole
            raise
        # 5. commit: publish the part atomically, then its marker (Output.commit_part)
        timings["total"] = time.perf_counter() - t0
        fields.update(
            timings={k: round(v, 4) for k, v in timings.items()},
            attempt=attempt,
            finished_at=time.time(),
            worker=self.worker_id,
            host=socket.gethostname(),
            device=str(self.device),
        )
        if self.accel:
            fields["accel"] = self.accel  # speed levers in effect for this shard (provenance)
        return self.output.commit_part(shard.name, writer.spool, fields)

    def _submit(self, batch: list[Sample], timings: dict) -> Batch:
        """Generate and score on the device, start the host copy and PNG encodes; don't wait."""
        import torch

        res = self.generator.generate(batch)
        timings["generate"] += res.seconds
        t = time.perf_counter()  # score + host copy + encode submission: this batch's own overhead
        scores = None
        if self.scorer is not None:
            s = self.scorer.score(res.images, [x.prompt for x in batch])
            scores = {k: s[k].float().cpu().tolist() for k in ("clip_cos", "clip_score")}
            if self.probes is not None:  # the same image embedding: no second CLIP forward
                scores.update(self.probes.compute(s["image_emb"], res.images))
            if self.aesthetic is not None:  # an MLP on the same embedding: no second image forward
                scores["aesthetic"] = self.aesthetic(s["image_emb"])
            if self.preference is not None:
                scores["preference"] = self.preference(res.images, [x.prompt for x in batch], s)
            if self.cfg.write.embeddings:  # the same embedding again, stored as float16
                scores["clip_image_embedding"] = list(s["image_emb"].half().cpu().numpy())
        timings["score"] += time.perf_counter() - t
        host = res.images.permute(0, 2, 3, 1).contiguous()
        if host.is_cuda:  # async copy to pinned memory; encoders wait on the event, not the GPU
            pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
            pinned.copy_(host, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            host = pinned
        else:
            event = None
        level = self.cfg.write.png_compress_level
        phash = self.cfg.write.phash
        futures = [
            self.pool.submit(encode_png, host, j, event, level, phash) if err is None else None
            for j, err in enumerate(res.errors)
        ]
        self.batches_done += 1
        if self.on_batch is not None:
            self.on_batch(len(batch))
        return Batch(batch, res, scores, futures, time.perf_counter() - t)

    def _collect(self, item: Batch, timings: dict) -> Batch:
        """Wait for the batch's PNG encodes; the batch then carries the encoded images."""
        item.futures = [f.result() if f is not None else None for f in item.futures]
        timings["encode"] += sum(e[1] for e in item.futures if e is not None)
        return item

    def _maybe_die(self) -> None:
        """Test hook (fault injection): SIGKILL this process once after N batches, to prove that a
        dead actor's shard is re-queued. Set only by tests; a no-op otherwise."""
        after = os.environ.get("SDGEN_FAULT_KILL_AFTER_BATCHES")
        flag = os.environ.get("SDGEN_FAULT_ONCE_FILE")
        if after and flag and self.batches_done >= int(after) and not os.path.exists(flag):
            open(flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
