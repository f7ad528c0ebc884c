"""The training loop: load, cache, train with accelerate, checkpoint, validate, export.

Family-specific work goes through the ModelFamily protocol; the objective lives in flow.py, loss
terms beside it (CREPA) follow loss_terms.LossTerm, and measurements go to metrics.MetricsSink
sinks. Read top to bottom: `train()` is the whole run.
"""
from __future__ import annotations

import errno
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from tuner.engine import checkpoints, flow, hub, model_card
from tuner.engine.config.prompt_library import validation_library
from tuner.engine.events import EventWriter
from tuner.engine.models.base import family_class
from tuner.engine.train import checkpoint, compiled, cpu_share, sharding, trackers, trainable, tread
from tuner.engine.train.control import Control
from tuner.engine.train.crepa import CREPA
from tuner.engine.train.ema import EMA
from tuner.engine.train.loss_terms import LossInputs, LossTerm
from tuner.engine.train.meters import Meters, device_counters, device_names
from tuner.engine.train.metrics import EventsSink, LatestSamples, MetricsSink
from tuner.engine.train.optim import make_optimizer, make_scheduler
from tuner.engine.train.process_group import make_accelerator
from tuner.engine.train.validation import Validator, all_prompt_texts

if TYPE_CHECKING:
    from tuner.engine.config import ConfigBundle, TrainConfig


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainResult:
    step: int
    total_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    stopped: bool = False
    pipeline: Path | None = None
    checkpoint: Path | None = None
    step_seconds: list[float] = field(default_factory=list)


def weight_dtype_for(cfg: TrainConfig) -> torch.dtype:
    """bf16 runs train bf16 weights (with adamw_bf16's compensated updates); fp16 keeps fp32 weights under autocast."""
    return torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32


def train(bundle: ConfigBundle, *, events: EventWriter, control: Control, preview_dir: Path,
          stop_after: int | None = None, sinks: Sequence[MetricsSink] = ()) -> TrainResult:
    """Run one training job described by a loaded config bundle; `stop_after` ends early (tests, benchmarks).

    `sinks` (trackers) get the step metrics and validation samples too (only the main process
    validates); give them on the processes that should report. train closes them however it ends.
    """
    cfg = bundle.train
    output_dir = bundle.resolve(cfg.output_dir)
    accelerator = make_accelerator(cfg)  # with the process-group timeout for the main process's caching/validation
    main = accelerator.is_main_process
    if accelerator.device.type == "cpu":
        # Denormal floats make CPU kernels crawl (10x slower steps as weights settle).
        torch.set_flush_denormal(True)
    # The thread count follows the cores other programs leave free (or torch_num_threads).
    cpu = cpu_share.setup(cfg, accelerator.device, accelerator.num_processes,
                          lambda message: events.emit("log", level="info", message=message))
    if not main:
        events = EventWriter(None)
    seed = cfg.seed if cfg.seed is not None else 0
    set_seed(seed + accelerator.process_index)
    generator = torch.Generator().manual_seed(seed + accelerator.process_index)
    # The training noise is drawn where it is used: on a GPU from a generator of its own there (no
    # latent-sized tensor drawn on the host and copied each step); on the CPU it is `generator`.
    noise_generator = generator if accelerator.device.type == "cpu" else \
        torch.Generator(device=accelerator.device).manual_seed(seed + accelerator.process_index)

    resume_from, damaged = checkpoint.resolve_resume(output_dir, cfg.resume_from_checkpoint)
    for bad in damaged:  # kept on disk: the user may restore it from a copy
        events.emit("log", level="warning", message=f"skipped {bad.path.name}: {bad.problem}; resuming from "
                    f"{resume_from.name} instead (the damaged checkpoint is left as it is)")
    # The config check (rules.output_dir_holds_no_earlier_run) says this before anything starts;
    # asked again here, since checkpoints may have appeared since.
    if resume_from is None and (earlier := checkpoints.earlier_run(output_dir, None)):
        raise FileExistsError(f"config.json: output_dir: {earlier}")

    # --- load and cache --------------------------------------------------------------------
    events.emit("status", phase="loading", message=f"loading {cfg.model_family} from {cfg.pretrained_model_name_or_path}")
    # The family loads its text encoders and VAE only when something needs encoding (prepare_data)
    # or decoding (validation), so a fully cached run never holds them.
    family = family_class(cfg.model_family)(cfg, accelerator.device, weight_dtype_for(cfg))

    from tuner.engine.data import prepare_data

    events.emit("status", phase="caching")
    library = validation_library(bundle)
    data = prepare_data(
        bundle, family, num_processes=accelerator.num_processes, process_index=accelerator.process_index,
        is_main=main, wait_for_main=accelerator.wait_for_everyone, events=events,
        extra_prompts=all_prompt_texts(cfg, library),
    )
    family.unload_text_encoders()
    empty_text = {k: v.to(accelerator.device) for k, v in data.text_for([""])[0].items()}  # caption dropout's
    validator = Validator(cfg, family, library, data.text_for, output_dir=output_dir,
                          preview_dir=preview_dir, events=events)

    def load_model(empty: bool = False) -> torch.nn.Module:
        return trainable.prepare(family.load_transformer(empty), cfg, family)

    # FSDP2 (fsdp_enable, several processes): each process keeps its shards of the model from here on.
    sharded = sharding.enabled(cfg, accelerator.num_processes)
    if sharded and cfg.fsdp_cpu_ram_efficient_loading:
        model = sharding.shard_from_main(load_model, cfg, accelerator.device)
        events.emit("log", level="info", message="fsdp_cpu_ram_efficient_loading: only the main process read the "
                    "base weights; it sent every other process its shards")
    else:
        model = load_model()
        if sharded:
            model = sharding.shard(model, cfg, accelerator.device)
    if sharded:
        events.emit("log", level="info", message=sharding.describe(model, accelerator.num_processes))
    elif cfg.fsdp_enable:
        events.emit("log", level="warning", message="fsdp_enable: one process has nothing to shard, so it trains "
                    "unsharded; launch several processes (num_processes) to shard the model over them")
    # TREAD (tread_config): a share of the image tokens skips a span of blocks, in training only.
    if cfg.tread_config is not None:
        router = tread.TokenRouter(model, cfg.model_family, cfg.tread_config.model_dump(), noise_generator)
        events.emit("log", level="info", message=router.describe())
    compiled.use_tf32(cfg, accelerator.device)
    if (said := compiled.compile_model(model, cfg)) is not None:
        events.emit("log", level="info", message=said)
    model.train()
    # Terms added to the flow loss, trained with the model: CREPA (video) hooks a block and trains a head.
    loss_terms: list[LossTerm] = [CREPA(cfg, family, model, accelerator.device)] if cfg.crepa_enabled else []
    trained = [*model.parameters(), *(p for term in loss_terms for p in term.parameters())]
    optimizer = make_optimizer(cfg, trained)
    accum = max(1, int(cfg.gradient_accumulation_steps or 1))
    total_steps = _total_steps(cfg, data.batches_per_epoch, accum)
    scheduler = make_scheduler(cfg, optimizer, total_steps)
    ema = EMA(model, cfg.ema_decay, cfg.ema_update_interval or 1,
              accelerator.device if cfg.ema_device == "accelerator" else "cpu") \
        if cfg.use_ema and (main or sharded) else None  # under FSDP each process averages its own shards
    if sharded:  # fully_shard already syncs the gradients: no DDP around it
        optimizer = accelerator.prepare(optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    step, nan_streak = 0, 0
    if resume_from is not None:
        state = checkpoint.load(resume_from, model=raw_model, optimizer=optimizer, scheduler=scheduler,
                                ema=ema, generator=generator, rank=accelerator.process_index, sharded=sharded,
                                noise=noise_generator)
        step, nan_streak = state["step"], state.get("nan_streak", 0)
        data.load_state_dict(state["data"])
        for term in loss_terms:
            term.load(resume_from)
        events.emit("log", level="info", message=f"resumed from {resume_from.name} at step {step}")

    result = TrainResult(step=step, total_steps=total_steps)
    meters = Meters(total_steps, start_step=step, batch_size=cfg.train_batch_size * accum * accelerator.num_processes)
    # Where step metrics and validation samples go: the events file (the main process writes it), then trackers.
    gpu_names = device_names(accelerator)  # a collective: every process names its GPU
    sinks = ([EventsSink(events, meters, gpu_names)] if main else []) + list(sinks)
    gallery = LatestSamples()  # the model card's pictures
    if main:
        sinks += [gallery, *trackers.start(bundle, output_dir, events, meters, accelerator.device)]
    pusher = hub.HubPush(bundle, output_dir, events) if main and cfg.push_to_hub else None
    last_checkpoint_step = step if resume_from is not None else -1

    def save(reason: str) -> None:
        nonlocal last_checkpoint_step
        events.emit("status", phase="saving", message=reason)
        # Every rank looks, so all stop together instead of some waiting at the barrier below.
        checkpoint.check_free_space(output_dir, checkpoint.needed_bytes(output_dir, raw_model, optimizer),
                                    f"checkpoint-{step}")
        tmp = checkpoint.begin(output_dir, step) if main else output_dir / f".checkpoint-{step}.tmp"
        accelerator.wait_for_everyone()
        try:
            if main:
                checkpoint.write_main(tmp, model=raw_model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                                      state={"step": step, "epoch": data.epoch, "nan_streak": nan_streak,
                                             "data": data.state_dict()}, sharded=sharded)
                for term in loss_terms:
                    term.save(tmp)
            if sharded:
                sharding.save(tmp, raw_model, optimizer, ema)
            checkpoint.write_rank(tmp, accelerator.process_index, generator, noise_generator)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # the half-written save, never an earlier checkpoint
            raise checkpoint.DiskFull(checkpoint.disk_full_message(
                output_dir, f"checkpoint-{step}", checkpoint.needed_bytes(output_dir, raw_model, optimizer))) from exc
        accelerator.wait_for_everyone()
        if main:
            result.checkpoint = checkpoint.commit(tmp, output_dir, step, cfg.checkpoints_total_limit,
                                                  keep=pusher.in_flight() if pusher is not None else ())
            events.emit("checkpoint", step=step, path=str(result.checkpoint))
            if pusher is not None and cfg.push_checkpoints_to_hub:
                pusher.upload(result.checkpoint, result.checkpoint.name, f"checkpoint-{step}")
        last_checkpoint_step = step
        events.emit("status", phase="training")

    def validate() -> None:
        events.emit("status", phase="validating", message=f"step {step}")
        with sharding.main_view(raw_model, family, ema, sharded) as (weights, weights_ema):
            if main:
                for samples in validator.run(weights, step, weights_ema):
                    for sink in sinks:
                        sink.log_samples(step, samples)
        accelerator.wait_for_everyone()
        model.train()
        events.emit("status", phase="training")

    # --- train -------------------------------------------------------------------------------
    try:  # the sinks are closed however the run ends
        events.emit("status", phase="training", message=f"step {step} of {total_steps}")
        dropout = float(cfg.caption_dropout_probability or 0.0)
        # Regularisation images keep an adapter close to its base (full-rank has no base to ask).
        prior_preservation = cfg.model_type == "lora"
        while step < total_steps:
            step_loss = torch.zeros((), device=accelerator.device)
            for micro in range(accum):
                batch = data.next_batch()
                latents = _to_device(batch.latents, accelerator.device)
                text = {k: _to_device(v, accelerator.device) for k, v in batch.text.items()}
                if dropout:
                    drop = torch.rand(len(batch.captions), generator=generator) < dropout
                    if drop.any():
                        text = _drop_captions(text, empty_text, _to_device(drop, accelerator.device))
                # Noise and noise levels are drawn where they are used (noise_generator), so nothing
                # but the cached batch crosses to a GPU, and that without waiting (pinned, non-blocking).
                noise = torch.randn(latents.shape, generator=noise_generator, device=accelerator.device)
                sigmas = flow.sample_sigmas(latents.shape[0], noise_generator, uniform=cfg.flow_use_uniform_schedule,
                                            sigmoid_scale=cfg.flow_sigmoid_scale,
                                            shift=family.training_shift(latents))
                noisy = flow.noisy_latents(latents, noise, sigmas)
                model_sigmas, weight = sigmas, None
                if batch.first_frame is not None:  # image-to-video clips (video.is_i2v): frame 0 is given
                    noisy, model_sigmas, weight = flow.condition_on_first_frame(
                        noisy, _to_device(batch.first_frame, accelerator.device), sigmas)
                with accelerator.autocast(), sharding.syncing(accelerator, model, sync=micro == accum - 1):
                    goal = flow.target(latents, noise)
                    if prior_preservation and batch.is_regularisation.any():
                        goal = trainable.prior_target(raw_model, family, noisy, model_sigmas, text, goal,
                                                      _to_device(batch.is_regularisation, accelerator.device))
                    prediction = family.predict(model, noisy, model_sigmas, text)
                    loss = flow.loss(prediction, goal, weight)
                    inputs = LossInputs(latents, noise, sigmas, prediction, text)
                    for term in loss_terms:
                        loss = loss + term.loss(inputs)
                    accelerator.backward(loss / accum)
                step_loss += loss.detach() / accum

            # Measured (and clipped) before the loss is read, so the gradient norm and each process's GPU
            # memory ride along with the loss: one gather and one copy to the host, the step's one wait.
            norm = _clip(accelerator, trained, cfg)
            gathered = accelerator.gather(torch.cat([step_loss.reshape(1).double(), norm.reshape(1).double(),
                                                     device_counters(accelerator.device)]).reshape(1, -1)).cpu()
            losses, grad_norm, gpu_memory = gathered[:, 0], float(gathered[0, 1]), gathered[:, 2:]
            if not torch.isfinite(losses).all():
                # NaN guard: skip this update everywhere, stop after too many in a row.
                optimizer.zero_grad(set_to_none=True)
                if accelerator.scaler is not None:  # fp16: the clip unscaled this step; lower the scale, as a skip does
                    accelerator.scaler.update()
                nan_streak += 1
                events.emit("log", level="warning",
                            message=f"step {step + 1}: non-finite loss, update skipped ({nan_streak} in a row)")
                if nan_streak >= cfg.max_nan_steps:
                    raise TrainingDiverged(
                        f"{nan_streak} non-finite losses in a row at step {step + 1}: training diverged. "
                        f"Lower learning_rate (now {cfg.learning_rate}), set max_grad_norm, or use mixed_precision "
                        f"bf16 with bf16 weights; the last good checkpoint is "
                        f"{checkpoint.find_latest(output_dir) or 'none (none was written yet)'}."
                    )
                continue
            nan_streak = 0
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if ema is not None:
                ema.update(raw_model, step)
            loss_value = float(losses.mean())
            result.losses.append((step, loss_value))
            meters.step_done(step, loss_value)
            metrics = {"epoch": data.epoch, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                       "grad_norm": grad_norm, "gpu_memory": gpu_memory.tolist()}
            for sink in sinks:
                sink.log(step, metrics)

            if cpu is not None:
                cpu.tick()
            requests = control.poll(accelerator)
            if "stop" in requests or (stop_after is not None and step >= stop_after):
                save("stop requested" if "stop" in requests else "stopping early")
                result.stopped = True
                break
            interval = cfg.checkpoint_step_interval
            if "save" in requests or (interval and step % interval == 0):
                save("save requested" if "save" in requests else "interval")
            if "sample" in requests or validator.due(step):
                validate()

        # --- finish ------------------------------------------------------------------------------
        result.step = step
        result.step_seconds = meters.durations
        if result.stopped:
            events.emit("status", phase="stopped",
                        message=f"stopped at step {step}; resume with resume_from_checkpoint: latest")
            return result
        if last_checkpoint_step != step:
            save("final")
        if validator.enabled and not validator.due(step):
            validate()
        events.emit("status", phase="saving", message="exporting the pipeline")
        exported = raw_model.parameters() if cfg.model_type == "full" else checkpoint.trainable_state(raw_model).values()
        checkpoint.check_free_space(output_dir, sum(t.numel() * t.element_size() for t in exported)
                                    * (2 if cfg.use_ema else 1), "the pipeline export")  # alike on every rank
        with sharding.main_view(raw_model, family, ema, sharded) as (weights, weights_ema):
            if main:
                result.pipeline = output_dir / "pipeline"
                trainable.export(weights, cfg, family, result.pipeline)
                card = dict(pipeline_class=family.pipeline_class.__name__, step=step,
                            processes=accelerator.num_processes)
                model_card.write_card(result.pipeline, bundle, samples=gallery.of(ema=False), **card)
                if weights_ema is not None:
                    with weights_ema.swapped_into(weights) as ema_model:
                        trainable.export(ema_model, cfg, family, output_dir / "pipeline-ema")
                    model_card.write_card(output_dir / "pipeline-ema", bundle, samples=gallery.of(ema=True),
                                          ema=True, **card)
        accelerator.wait_for_everyone()
        if pusher is not None:  # after the barrier: the other processes do not wait on an upload
            pusher.upload_exports(step, ema=ema is not None)
            pusher.wait()
            checkpoint.rotate(output_dir, cfg.checkpoints_total_limit)   # what rotation left while it uploaded
        events.emit("done", step=step, paths={"pipeline": str(output_dir / "pipeline"),
                                              "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                                              "validation": str(output_dir / "validation_images"),
                                              **trackers.result_paths(bundle)})
        events.emit("status", phase="done", message=f"finished {step} steps")
        accelerator.end_training()
        return result
    finally:
        for sink in sinks:
            sink.close()
        if pusher is not None:
            pusher.close()


def _total_steps(cfg: TrainConfig, batches_per_epoch: int, accum: int) -> int:
    if cfg.max_train_steps:
        return int(cfg.max_train_steps)
    return int(cfg.num_train_epochs) * max(1, math.ceil(batches_per_epoch / accum))


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; to a GPU through pinned memory without blocking (a pageable copy would make
    the host wait for the GPU's queue to drain, every step)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _drop_captions(text: dict[str, torch.Tensor], empty: dict[str, torch.Tensor],
                   drop: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replace the dropped samples' prompt embeddings with the empty prompt's (all on the same device)."""
    out = {}
    for key, value in text.items():
        blank = empty[key].to(value.dtype).unsqueeze(0).expand_as(value)
        mask = drop.view(-1, *([1] * (value.ndim - 1)))
        out[key] = torch.where(mask, blank, value)
    return out


def _clip(accelerator: Accelerator, trained: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.Tensor:
    """Clip by norm or by value as configured (0 = off), the model's and the loss terms' gradients
    together (CREPA's head is trained too); returns the gradient norm before clipping, on the device
    (0-dim, the whole model's under FSDP), without waiting for it."""
    limit = float(cfg.max_grad_norm or 0.0)
    params = [p for p in trained if p.grad is not None]
    by_norm = cfg.grad_clip_method == "norm" and limit > 0
    # Measured either way (clip_grad_norm_ with no limit clips nothing), so the monitor and the
    # trackers show it under SimpleTuner's default, value clipping; fp16's gradients are unscaled here.
    norm = accelerator.clip_grad_norm_(params, limit if by_norm else float("inf"))
    if cfg.grad_clip_method == "value" and limit > 0:
        # torch's own: accelerate's would unscale fp16 gradients a second time.
        torch.nn.utils.clip_grad_value_(params, limit)
    return sharding.whole(norm)  # a sharded model's norm comes as a DTensor over the shards

