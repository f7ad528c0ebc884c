"""First-contact checks for a CUDA machine: what tuner's CPU tests cannot reach, one line each.

Each check prints PASS / FAIL / SKIP, its name and its figure, then the script exits 1 if any failed:
- device_names: NVML's GPU names against CUDA's, index by index (CUDA_DEVICE_ORDER as set);
- sd35_large_nf4_load: the peak GPU memory of loading SD3.5 Large as an nf4 base (quantize_via cpu and
  accelerator, through the engine's load_denoiser), each under 11 GiB;
- quanto_kernels: qfloat8 / qint4 / qint2 freeze, forward and backward at SD3.5 Large's widths, through
  quantize_model (a missing nvcc/ninja shows as its error), with the output error against bf16;
- nf4_adapters_reload: an nf4 SD3.5-Medium-shaped base with LoRA, trained 3 steps, exported, then loaded
  by StableDiffusion3Pipeline.load_lora_weights into a bf16 base: its change to the output must match
  ours; and LoKr, saved and loaded onto a fresh nf4 base, giving our output again;
- sana_full_step_profile: a Sana 1.6B full-rank step (bf16, adamw_bf16, checkpointing) with the EMA on
  the GPU and on the CPU: the EMA's share of the step (< 10 %) and host syncs per step (<= 2);
- engine_step_syncs: the engine's own training step (tiny Sana, bf16) waits for the GPU at most once
  (the loss read), by torch's sync debug mode;
- group_offload_refused: diffusers' group offload under a 3-step training loop on CUDA, which tuner
  refuses (engine/offload.py): PASS when it indeed breaks, FAIL when it trains (the refusal could go);
- estimator_vs_measured: every single- and multi-GPU preset's training step (one GPU, no DDP) at its
  real shape, resolution and frames: the measured peak against the estimate's training part.
Models have random weights in each checkpoint's real shape (the configs below, or config.json from the
Hugging Face cache when it is there), written once under --work; nothing is downloaded.

Run: python bench/gpu_checks.py [--only name,name] [--list] [--work DIR]
Without a CUDA device it prints "no CUDA device: skipped" and exits 0.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shapes.py, when imported from elsewhere
from shapes import random_transformer, transformer_config  # noqa: E402

GIB = 1024 ** 3
CHECKS: dict[str, Callable[[argparse.Namespace], tuple[bool | None, str]]] = {}


def check(fn: Callable[[argparse.Namespace], tuple[bool | None, str]]):
    CHECKS[fn.__name__] = fn
    return fn


# --- models ----------------------------------------------------------------------------------------

def random_folder(key: str, work: Path) -> Path:
    """A folder with transformer/ holding random bf16 weights of `key`'s shape (made once, reused)."""
    random_transformer(key, work / key / "transformer")
    return work / key


def _cfg(**values):
    from tuner.engine.config import TrainConfig

    return TrainConfig(**values)


def _family(name: str, device):
    import torch

    return SimpleNamespace(name=name, device=torch.device(device), weight_dtype=torch.bfloat16)


def _inputs(key: str, model, batch: int, resolution: int, frames: int = 1, device="cuda") -> tuple:
    """(noisy latents, sigmas, text) shaped as the family's cached data at `resolution` (video: 16:9, `frames`)."""
    import torch

    sigmas = torch.rand(batch, device=device)
    if key.startswith("sd3"):
        side = resolution // 8
        latents = torch.randn(batch, 16, side, side, device=device)
        text = {"prompt_embeds": torch.randn(batch, 77 + 154, 4096, device=device),
                "pooled_prompt_embeds": torch.randn(batch, 2048, device=device)}
    elif key.startswith("sanavideo"):
        latents = torch.randn(batch, 16, 1 + (frames - 1) // 4, resolution // 8, resolution * 832 // 480 // 8 // 2 * 2,
                              device=device)
        text = {"prompt_embeds": torch.randn(batch, 300, 2304, device=device),
                "prompt_attention_mask": torch.ones(batch, 300, device=device, dtype=torch.long)}
    else:
        side = resolution // 32
        latents = torch.randn(batch, 32, side, side, device=device)
        text = {"prompt_embeds": torch.randn(batch, 300, 2304, device=device),
                "prompt_attention_mask": torch.ones(batch, 300, device=device, dtype=torch.long)}
    return latents, sigmas, text


def _predict(key: str, model, latents, sigmas, text):
    """The engine family's own predict (it reads nothing of the family but the transformer's config)."""
    from tuner.engine.models.sana import SanaFamily
    from tuner.engine.models.sanavideo import SanaVideoFamily
    from tuner.engine.models.sd3 import SD3Family

    cls = SD3Family if key.startswith("sd3") else SanaVideoFamily if key.startswith("sanavideo") else SanaFamily
    return cls.predict(SimpleNamespace(transformer_config=dict(model.config)), model, latents, sigmas, text)


def _peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / GIB


def _reset() -> None:
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


# --- checks --------------------------------------------------------------------------------------

@check
def device_names(args) -> tuple[bool | None, str]:
    import torch

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        import pynvml

        pynvml.nvmlInit()
        nvml = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
        nvml = [n.decode() if isinstance(n, bytes) else n for n in nvml]
    except Exception as exc:  # noqa: BLE001 - reported as the figure
        return None, f"NVML unavailable ({exc})"
    order = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST (unset)")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    same = nvml[:len(cuda)] == cuda if visible is None else set(cuda) <= set(nvml)
    return same, f"CUDA_DEVICE_ORDER={order}; CUDA {cuda}; NVML {nvml}"


@check
def sd35_large_nf4_load(args) -> tuple[bool | None, str]:
    import torch
    from diffusers import SD3Transformer2DModel

    from tuner.engine.models.common import load_denoiser

    folder = random_folder("sd3.5-large", args.work)
    figures, ok = [], True
    for via in ("cpu", "accelerator"):
        _reset()
        cfg = _cfg(model_family="sd3", model_type="lora", base_model_precision="nf4-bnb", quantize_via=via,
                   gradient_checkpointing=True)
        start = time.perf_counter()
        model = load_denoiser(SD3Transformer2DModel, str(folder), torch.bfloat16, torch.device("cuda"), cfg)
        peak, held = _peak_gib(), torch.cuda.memory_allocated() / GIB
        del model
        ok &= peak < 11
        figures.append(f"via {via}: peak {peak:.2f} GiB, held {held:.2f} GiB, {time.perf_counter() - start:.0f} s")
    return ok, "; ".join(figures) + " (limit 11 GiB)"


@check
def quanto_kernels(args) -> tuple[bool | None, str]:
    import torch

    from tuner.engine.quantize import quantize_model

    figures, ok = [], True
    for precision in ("fp8-quanto", "int4-quanto", "int2-quanto"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2432, 9728), torch.nn.GELU(), torch.nn.Linear(9728, 2432))
        model = model.to(torch.bfloat16)
        x = torch.randn(4096, 2432, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        with torch.no_grad():
            reference = model.to("cuda")(x)
        model.to("cpu")
        try:
            start = time.perf_counter()
            quantize_model(model, precision, device="cuda", via="accelerator")
            out = model(x)
            out.float().pow(2).mean().backward()
            torch.cuda.synchronize()
            error = ((out - reference).float().norm() / reference.float().norm()).item()
            finite = bool(torch.isfinite(x.grad).all())
            ok &= finite
            figures.append(f"{precision}: rel. error {error:.3f}, grads {'finite' if finite else 'NOT finite'}, "
                           f"{time.perf_counter() - start:.1f} s")
        except Exception as exc:  # noqa: BLE001 - a build failure is this check's finding
            ok = False
            figures.append(f"{precision}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    return ok, "; ".join(figures)


def _train_steps(model, key: str, steps: int, lr: float, resolution: int = 512) -> None:
    import torch

    from tuner.engine.train.optim import make_optimizer

    optimizer = make_optimizer(_cfg(optimizer="adamw_bf16", learning_rate=lr), model.parameters())
    for _ in range(steps):
        latents, sigmas, text = _inputs(key, model, 1, resolution)
        _predict(key, model, latents, sigmas, text).float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@check
def nf4_adapters_reload(args) -> tuple[bool | None, str]:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from tuner.engine import adapters
    from tuner.engine.models.common import load_denoiser
    from tuner.engine.train import trainable

    folder = random_folder("sd3.5-medium", args.work)
    out_dir = Path(tempfile.mkdtemp(dir=args.work))
    device = torch.device("cuda")
    torch.manual_seed(0)
    probe = _inputs("sd3", None, 1, 512)
    figures, ok = [], True

    def nf4_base(**extra):
        cfg = _cfg(model_family="sd3", model_type="lora", base_model_precision="nf4-bnb",
                   quantize_via="accelerator", lora_rank=16, lora_dropout=0.0, **extra)
        return cfg, load_denoiser(SD3Transformer2DModel, str(folder), torch.bfloat16, device, cfg)

    # LoRA: our export, loaded by diffusers into a bf16 base, changes the output as ours does
    cfg, model = nf4_base()
    model = trainable.prepare(model, cfg, _family("sd3", device))
    _train_steps(model, "sd3", 3, lr=1e-3)
    with torch.no_grad():
        ours = _predict("sd3", model, *probe)
        with adapters.adapters_off(model):
            ours_base = _predict("sd3", model, *probe)
    adapters.export_lora(model, StableDiffusion3Pipeline, out_dir / "lora")
    del model
    base = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=torch.bfloat16).to(device)
    with torch.no_grad():
        plain = _predict("sd3", base, *probe)
    pipe = StableDiffusion3Pipeline(transformer=base, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.load_lora_weights(out_dir / "lora")
    with torch.no_grad():
        loaded = _predict("sd3", base, *probe)
    ours_delta, their_delta = (ours - ours_base).float().flatten(), (loaded - plain).float().flatten()
    cosine = torch.nn.functional.cosine_similarity(ours_delta, their_delta, dim=0).item()
    ok &= cosine > 0.98 and their_delta.norm() > 0
    figures.append(f"LoRA via load_lora_weights: cosine of the adapter's effect {cosine:.4f} (> 0.98)")
    del pipe, base

    # LoKr: saved, then rebuilt on a fresh nf4 base by load_lokr, gives our output
    cfg, model = nf4_base(lora_type="lycoris")
    model = trainable.prepare(model, cfg, _family("sd3", device))
    _train_steps(model, "sd3", 3, lr=1e-3)
    with torch.no_grad():
        ours = _predict("sd3", model, *probe)
    adapters.save_lokr(model, out_dir / "lokr")
    del model
    _, fresh = nf4_base(lora_type="lycoris")
    adapters.load_lokr(fresh, out_dir / "lokr")
    with torch.no_grad():
        again = _predict("sd3", fresh, *probe)
    diff = ((again - ours).float().norm() / ours.float().norm()).item()
    ok &= diff < 1e-2
    figures.append(f"LoKr reloaded on nf4: relative difference {diff:.2e} (< 1e-2)")
    return ok, "; ".join(figures)


@check
def sana_full_step_profile(args) -> tuple[bool | None, str]:
    import torch

    from tuner.engine.models.common import checkpoint_blocks
    from tuner.engine.train.ema import EMA
    from tuner.engine.train.optim import make_optimizer

    cls, config = transformer_config("sana-1.6b")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = cls.from_config(config).to(torch.bfloat16)
    checkpoint_blocks(model, model.transformer_blocks, None)
    model.train()
    optimizer = make_optimizer(_cfg(optimizer="adamw_bf16", learning_rate=1e-5), model.parameters())
    figures, ok = [], True
    for where in ("accelerator", "cpu"):
        ema = EMA(model, 0.999, 1, "cuda" if where == "accelerator" else "cpu")
        step_ms, ema_ms, syncs = [], [], 0
        for index in range(8):
            measured = index >= 3
            latents, sigmas, text = _inputs("sana", model, 4, 1024)
            begin, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn" if measured else "default")
                begin.record()
                loss = _predict("sana", model, latents, sigmas, text).float().pow(2).mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                mid.record()
                ema.update(model, index + 1)
                end.record()
                float(loss)  # the loop's one sync per step: the loss it reports
                torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
            if measured:
                step_ms.append(begin.elapsed_time(end))
                ema_ms.append(mid.elapsed_time(end))
                syncs += sum("synchroniz" in str(w.message) for w in caught)
        ema.wait()
        step, share = sum(step_ms) / len(step_ms), sum(ema_ms) / sum(step_ms)
        per_step = syncs / len(step_ms)
        ok &= share < 0.10 and per_step <= 2
        figures.append(f"EMA on {where}: step {step:.0f} ms, EMA {100 * share:.1f} % of it, {per_step:.1f} host syncs/step")
        del ema
    figures.append(f"peak {_peak_gib():.1f} GiB at batch 4, 1024 px")
    return ok, "; ".join(figures)


@check
def engine_step_syncs(args) -> tuple[bool | None, str]:
    """The engine's own step (tiny Sana, bf16): how often the host waits for the GPU, from torch's sync
    debug mode between the first step and the stop. The loop reads the loss, gradient norm and memory
    in one copy (the NaN guard needs the loss before the update); everything else stays queued."""
    import torch

    from tuner.engine.config import load_bundle
    from tuner.engine.events import EventWriter
    from tuner.engine.tiny import build_tiny_sana
    from tuner.engine.train.control import Control
    from tuner.engine.train.loop import train
    from tuner.presets.demo import write_demo_config

    work = Path(tempfile.mkdtemp(dir=args.work))
    config = write_demo_config(work, model_dir=build_tiny_sana(args.work / "tiny-sana"), images=16,
                               max_train_steps=steps, validation_disable=True, validation_step_interval=0,
                               checkpoint_step_interval=0, use_ema=False, mixed_precision="bf16",
                               optimizer="adamw_bf16", caption_dropout_probability=0.1)
    steps, watched = 12, {"from": None}

    def listener(event):
        if event["type"] == "progress" and watched["from"] is None:
            watched["from"] = event["step"]
            torch.cuda.set_sync_debug_mode("warn")
        elif event["type"] == "status" and event.get("phase") == "saving":  # the stop's checkpoint
            torch.cuda.set_sync_debug_mode("default")

    events = EventWriter(work / "events.jsonl")
    events.add_listener(listener)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(load_bundle(config), events=events, control=Control(work), preview_dir=work / "previews",
              stop_after=steps)
    steps -= watched["from"] or 0
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    per_step = len(syncs) / max(1, steps)
    first = f"; the first: {syncs[0]}" if syncs else ""
    return per_step <= 1.0, f"{per_step:.1f} host syncs per step over {steps} steps (at most 1){first}"


@check
def group_offload_refused(args) -> tuple[bool | None, str]:
    import torch
    from diffusers.hooks import apply_group_offloading

    from tuner.engine import offload

    class Blocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(1024, 1024) for _ in range(4))

        def forward(self, x):
            for block in self.blocks:
                x = torch.nn.functional.gelu(block(x))
            return x

    model = Blocks()
    apply_group_offloading(model, onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
                           offload_type="block_level", num_blocks_per_group=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.blocks[0].weight.detach().cpu().clone()
    try:
        for _ in range(3):
            model(torch.randn(64, 1024, device="cuda")).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        trained = not torch.equal(before, model.blocks[0].weight.detach().cpu())
        outcome = f"3 steps ran and the weights {'changed' if trained else 'did not change'}"
        broken = not trained
    except Exception as exc:  # noqa: BLE001 - the failure is the finding
        outcome, broken = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", True
    try:
        offload.apply(Blocks(), _cfg(enable_group_offload=True), torch.device("cuda"), name="transformer")
        refused = False
    except ValueError:
        refused = True
    return broken and refused, f"diffusers' group offload under training: {outcome}; tuner refuses it: {refused}"


@check
def estimator_vs_measured(args) -> tuple[bool | None, str]:
    import torch

    from tuner.engine import vram
    from tuner.engine.models.common import load_denoiser
    from tuner.engine.train import trainable
    from tuner.engine.train.ema import EMA
    from tuner.engine.train.optim import make_optimizer
    from tuner.presets import list_presets

    figures, ok = [], True
    for preset in [p for p in list_presets() if p.gpus > 0]:
        video = preset.dataset.get("video") or {}
        config = {"model_family": preset.model_family, "model_type": preset.model_type,
                  **{k: preset.dataset[k] for k in ("resolution", "resolution_type") if k in preset.dataset},
                  **({"num_frames": video["num_frames"]} if "num_frames" in video else {}), **preset.config}
        estimated = vram.estimate(config, {"gpus": 1})
        estimate = estimated["peaks"]["training"] - estimated["parts"]["vae"]  # this step holds no VAE
        size = vram.known_model(preset.config["pretrained_model_name_or_path"], preset.model_family)
        key = {"sd3": "sd3.5-large" if size["params"] > 5e9 else "sd3.5-medium", "sana": "sana-1.6b",
               "sanavideo": "sanavideo-2b"}[preset.model_family]
        _reset()
        try:
            cfg = _cfg(**{k: v for k, v in config.items() if k != "num_frames"})
            cls, _ = transformer_config(key)
            family = _family(preset.model_family, "cuda")
            model = load_denoiser(cls, str(random_folder(key, args.work)), torch.bfloat16, family.device, cfg)
            model = trainable.prepare(model, cfg, family)
            optimizer = make_optimizer(cfg, model.parameters())
            ema = EMA(model, cfg.ema_decay, 1, "cuda") if cfg.use_ema and cfg.ema_device == "accelerator" else None
            resolution = int(cfg.resolution_of().edge)
            for step in range(2):
                latents, sigmas, text = _inputs(key, model, cfg.train_batch_size, resolution,
                                                int(config.get("num_frames", 1)))
                _predict(key, model, latents, sigmas, text).float().pow(2).mean().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model, step + 1)
            measured = _peak_gib()
            del model, optimizer, ema
            fits = measured <= estimate
            ok &= fits
            figures.append(f"{preset.name}: measured {measured:.1f} GiB, estimated {estimate:.1f} GiB "
                           f"({'ok' if fits else 'UNDER-ESTIMATED'})")
        except Exception as exc:  # noqa: BLE001 - one preset's failure must not hide the others
            ok = False
            figures.append(f"{preset.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return ok, "; ".join(figures) + " (training step only: no VAE, no text encoders, one GPU)"


# --- running -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated check names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the check names and exit")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tuner-gpu-checks",
                        help="where the random-weight models are written (about 30 GB) and reused")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CHECKS))
        return 0
    names = args.only.split(",") if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        _reset()
        start = time.perf_counter()
        try:
            ok, figure = CHECKS[name](args)
        except Exception as exc:  # noqa: BLE001 - every check reports, whatever the others do
            ok, figure = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            traceback.print_exc(file=sys.stderr)
        with contextlib.suppress(Exception):
            torch.cuda.set_sync_debug_mode("default")
        failed += ok is False
        print(f"{'PASS' if ok else 'SKIP' if ok is None else 'FAIL'} {name}: {figure} "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
