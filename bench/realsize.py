"""Benchmark at real size: each shipped GPU preset's recipe on its family's published architecture, and a bare loop.

Each row trains one preset (its config, optimizer, precision, adapter, checkpointing, EMA) with the
engine's real `train()` for --steps steps on a model folder of the preset's architecture (bench/
shapes.py: the published transformer config, random weights, nothing downloaded), then the same
cached batches through a bare loop: the same prepared model and optimizer, and per step only
noise, forward, flow loss, backward, clipping, the optimizer and the recipe's EMA, written out by
hand (no accelerator, meters, guards or events). The text encoders and VAE have their real output
widths (Gemma2 2304; CLIP-L 768, CLIP-G 1280, T5 4096; DC-AE 32 channels at 32x, SD3's KL-VAE and
the Wan VAE 16 channels at 8x) but one small layer each: they only fill the caches here.

The table: median s/step after the warm-up steps, samples/s, peak memory (the torch allocator and
NVML's figure for this process; the CPU shows peak RSS), the preset's VRAM estimate (its training
peak, engine/vram.py) beside the measured one, model FLOPs per step (3x the forward's, counted by torch's
FlopCounterMode on the meta device), MFU against the GPU's dense bf16 peak, and ours/bare.

Run on a GPU: python bench/realsize.py [--presets a,b] [--steps 20] [--work DIR] [--peak-tflops N]
--cpu: the same at --layers blocks (default 1) of real width, 128 px (video: 5 frames of 64 px) and
3 steps, as CI's smoke test; recipe parts the CPU cannot run are swapped and named in the row's note.
Exits 1 when a row fails.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shapes.py, when imported from elsewhere
from shapes import SHAPES, random_transformer, transformer_config  # noqa: E402

GIB = 1024 ** 3
# Rows beyond one per preset: the 1.6B full-rank recipe on Sana's other published size.
EXTRA_ROWS = (("sana-1.6b-24gb-full", "sana-600m"),)
# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets; the first name found in the GPU's wins.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("RTX 4090", 165.2), ("RTX 3090", 71.0))
# What the CPU cannot run, and what --cpu trains instead (named in the row's note).
# bf16 matmuls crawl on CPUs without AMX: one SD3.5 Medium block took 29.7 s a step in bf16, 1.28 s in fp32.
CPU_SWAPS = {"mixed_precision": {"bf16": "no"},
             "optimizer": {"adamw_bf16": "optimi-adamw"}}  # adamw_bf16 trains bf16 weights only


# --- model folders -------------------------------------------------------------------------------

def build_model(key: str, family: str, work: Path, layers: int | None) -> Path:
    """A diffusers folder of `key`: the real transformer (first `layers` blocks when given) beside
    real-width, one-layer text encoders and VAE, over the tiny model's tokenizers and scheduler."""
    import torch

    from tuner.engine import families

    out = work / f"{key}-{layers or 'all'}-layers"
    if (out / "realsize.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(families.card(family).tiny_builder()(work / f"tiny-{family}"), out)
    for part in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        shutil.rmtree(out / part, ignore_errors=True)
    random_transformer(key, out / "transformer", layers)
    torch.manual_seed(0)
    for part, model in _encoders(family, out).items():
        model.to(torch.bfloat16 if part.startswith("text") else torch.float32).save_pretrained(out / part)
    (out / "realsize.json").write_text(json.dumps({"key": key, "layers": layers}) + "\n")
    return out


def _encoders(family: str, folder: Path) -> dict:
    """Real output widths, one small layer: what the caches need to hold real shapes."""
    from diffusers import AutoencoderDC, AutoencoderKL, AutoencoderKLWan
    from transformers import (AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection, Gemma2Config, Gemma2Model,
                              T5Config, T5EncoderModel)

    def vocab(part: str) -> int:
        return len(AutoTokenizer.from_pretrained(folder / part))

    if family == "sd3":
        clips = {f"text_encoder{suffix}": CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=vocab(f"tokenizer{suffix}"), hidden_size=width, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=1, max_position_embeddings=77, projection_dim=width, hidden_act="gelu",
            bos_token_id=0, eos_token_id=1, pad_token_id=1)) for suffix, width in (("", 768), ("_2", 1280))}
        t5 = T5EncoderModel(T5Config(vocab_size=vocab("tokenizer_3"), d_model=4096, d_kv=8, d_ff=64, num_layers=1,
                                     num_heads=1, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                     decoder_start_token_id=0))
        vae = AutoencoderKL(block_out_channels=(16,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=16,
                            norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
                            shift_factor=0.0609, scaling_factor=1.5305)
        return {**clips, "text_encoder_3": t5, "vae": vae}
    gemma = Gemma2Model(Gemma2Config(
        vocab_size=vocab("tokenizer"), hidden_size=2304, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, head_dim=64, max_position_embeddings=8192,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager"))
    if family == "sanavideo":  # the tiny Wan VAE has the real 16 channels at 8x (4x in time) already
        from tuner.engine.tiny.sanavideo import SANAVIDEO_VAE

        vae = AutoencoderKLWan(**SANAVIDEO_VAE)
    else:  # DC-AE f32c32: six stages (five 2x downsamplings), 32 latent channels
        stages = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
        multiscales = ((),) * 3 + ((5,),) * 3
        vae = AutoencoderDC(in_channels=3, latent_channels=32, attention_head_dim=8, encoder_block_types=stages,
                            decoder_block_types=stages, encoder_block_out_channels=(32,) * 6,
                            decoder_block_out_channels=(32,) * 6, encoder_qkv_multiscales=multiscales,
                            decoder_qkv_multiscales=multiscales, encoder_layers_per_block=(1,) * 6,
                            decoder_layers_per_block=(1,) * 6, downsample_block_type="conv",
                            upsample_block_type="interpolate", decoder_norm_types="rms_norm",
                            decoder_act_fns="silu", scaling_factor=0.41407)
    return {"text_encoder": gemma, "vae": vae}


# --- a row's data and config ---------------------------------------------------------------------

def write_dataset(folder: Path, video: bool, size: tuple[int, int], frames: int, count: int) -> Path:
    """`count` smooth random pictures (or clips) of `size` with a caption each."""
    import numpy as np
    from PIL import Image

    from tuner.engine.data.video import write_video

    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cells = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)  # upscaled: smooth, as photos are

        def picture(shift: int) -> Image.Image:
            return Image.fromarray(np.roll(cells, shift, axis=1)).resize(size, Image.BICUBIC)

        if video:  # the pattern drifts sideways, a cell every frame
            write_video(folder / f"{i:03d}.mp4", [picture(t) for t in range(frames)], 16)
        else:
            picture(0).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a benchmark picture number {i}\n")
    (folder / "done").write_text("")
    return folder


def write_config(preset, model: Path, work: Path, steps: int, cpu: bool) -> tuple[Path, list[str]]:
    """The preset laid over this row's model and data (CPU: small sizes, swaps); (config folder, notes)."""
    from tuner.engine import families
    from tuner.presets import apply_preset

    video = preset.model_family == "sanavideo"
    frames = int((preset.dataset.get("video") or {}).get("num_frames", 1))
    resolution = int(preset.dataset.get("resolution", preset.config.get("resolution", 1024)))
    if cpu:
        resolution, frames = (64, 5) if video else (128, 1)
    if video:  # the card's frame (832x480) at this height, on the family's pixel grid
        card = families.card("sanavideo")
        width, height = card.frame_size
        size = (resolution * width // height // card.pixel_alignment * card.pixel_alignment, resolution)
    else:
        size = (resolution, resolution)
    batch = int(preset.config.get("train_batch_size", 1))
    data = write_dataset(work.parent / f"data-{size[0]}x{size[1]}x{frames}", video, size, frames, max(4, 2 * batch))
    config_dir = work / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    datasets = [
        {"id": "bench", "type": "local", "dataset_type": "video" if video else "image", "instance_data_dir": str(data),
         "caption_strategy": "textfile", "cache_dir_vae": str(work / "cache" / "vae"),
         **({"video": {"num_frames": frames}} if video else {})},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(work / "cache" / "text")},
    ]
    config, datasets = apply_preset(preset, {}, datasets)
    config.update(pretrained_model_name_or_path=str(model), output_dir=str(work / "output"),
                  data_backend_config=str(config_dir / "multidatabackend.json"), max_train_steps=steps,
                  validation_disable=True, validation_step_interval=0, checkpoint_step_interval=0,
                  validation_prompt="a benchmark picture", seed=0)
    if "pretrained_vae_model_name_or_path" in config:
        config["pretrained_vae_model_name_or_path"] = str(model)
    notes = []
    if cpu:
        for key, swaps in CPU_SWAPS.items():
            if config.get(key) in swaps:
                notes.append(f"{key} {config[key]}→{swaps[config[key]]}")
                config[key] = swaps[config[key]]
        for entry in datasets[:1]:
            entry.update(resolution=resolution, resolution_type="pixel")
            if video:
                entry["video"]["num_frames"] = frames
        config.update(resolution=resolution, resolution_type="pixel")
    (config_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (config_dir / "multidatabackend.json").write_text(json.dumps(datasets, indent=2) + "\n")
    return config_dir, notes


def vram_estimate_gb(config_dir: Path) -> float:
    """The estimator's training peak for this row's config (before fragmentation and the CUDA context)."""
    from tuner.engine import vram

    config = json.loads((config_dir / "config.json").read_text())
    dataset = json.loads((config_dir / "multidatabackend.json").read_text())[0]
    config.update(resolution=dataset.get("resolution", config.get("resolution")),
                  resolution_type=dataset.get("resolution_type", config.get("resolution_type")))
    if "video" in dataset:
        config["num_frames"] = dataset["video"]["num_frames"]
    return vram.estimate(config, {"gpus": 1})["peaks"]["training"]


# --- the two runs, each in a process of its own ----------------------------------------------------

class PeakMemory:
    """Peak memory while running: the torch allocator's, NVML's for this process (polled), or the CPU's RSS."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.nvml_peak, self._stop, self._thread = 0, threading.Event(), None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            try:
                import pynvml

                pynvml.nvmlInit()
                self._thread = threading.Thread(target=self._poll, args=(pynvml,), daemon=True)
                self._thread.start()
            except Exception:  # noqa: BLE001 - NVML is optional: the column shows "-"
                self._thread = None

    def _poll(self, pynvml) -> None:
        import torch

        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        while not self._stop.wait(0.02):
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory:
                    self.nvml_peak = max(self.nvml_peak, proc.usedGpuMemory)

    def result(self) -> dict:
        import torch

        self._stop.set()
        if not self.cuda:
            return {"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, "nvml_gib": None}
        return {"peak_gib": torch.cuda.max_memory_allocated() / GIB,
                "nvml_gib": self.nvml_peak / GIB if self._thread is not None else None}


def run_ours(config_dir: Path, steps: int, warmup: int) -> dict:
    from tuner.engine.config import load_bundle
    from tuner.engine.events import EventWriter
    from tuner.engine.train.control import Control
    from tuner.engine.train.loop import train

    memory = PeakMemory()
    job = config_dir.parent / "job"
    job.mkdir(exist_ok=True)
    result = train(load_bundle(config_dir), events=EventWriter(job / "events.jsonl"), control=Control(job),
                   preview_dir=job / "previews", stop_after=steps)
    return {"s_per_step": statistics.median(result.step_seconds[warmup:]), **memory.result()}


def run_bare(config_dir: Path, steps: int, warmup: int) -> dict:
    """The hand-written loop on the engine's cached batches and prepared model (see the docstring)."""
    import torch

    from tuner.engine.config import load_bundle
    from tuner.engine.data import prepare_data
    from tuner.engine.models.base import family_class
    from tuner.engine.train import trainable
    from tuner.engine.train.loop import weight_dtype_for
    from tuner.engine.train.optim import make_optimizer

    bundle = load_bundle(config_dir)
    cfg = bundle.train
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    family = family_class(cfg.model_family)(cfg, device, weight_dtype_for(cfg))
    data = prepare_data(bundle, family)  # the engine's run has filled the caches
    family.unload_text_encoders()
    accum = max(1, int(cfg.gradient_accumulation_steps or 1))
    batches = [data.next_batch() for _ in range(steps * accum)]
    flops = 3 * accum * forward_flops(family, batches[0])
    memory = PeakMemory()
    model = trainable.prepare(family.load_transformer(), cfg, family)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params)
    ema_device = device if cfg.ema_device == "accelerator" else torch.device("cpu")
    ema = [p.detach().to(ema_device, torch.float32) for p in params] if cfg.use_ema else None
    generator = torch.Generator(device).manual_seed(0)
    times = []
    for step in range(steps):
        started = time.perf_counter()
        for batch in batches[step * accum:(step + 1) * accum]:
            x0 = batch.latents.to(device)
            text = {k: v.to(device) for k, v in batch.text.items()}
            noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
            sigmas = torch.sigmoid(torch.randn(x0.shape[0], generator=generator, device=device))
            s = sigmas.view(-1, *[1] * (x0.ndim - 1))
            prediction = family.predict(model, (1 - s) * x0 + s * noise, sigmas, text)
            loss = torch.nn.functional.mse_loss(prediction.float(), (noise - x0).float())
            (loss / accum).backward()
        if cfg.max_grad_norm and cfg.grad_clip_method == "norm":
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        elif cfg.max_grad_norm:
            torch.nn.utils.clip_grad_value_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None and (step + 1) % (cfg.ema_update_interval or 1) == 0:
            torch._foreach_lerp_(ema, [p.detach().to(ema_device, torch.float32) for p in params], 1 - cfg.ema_decay)
        float(loss)  # a hand-written loop prints its loss: one sync a step, as the engine has
        times.append(time.perf_counter() - started)
    return {"s_per_step": statistics.median(times[warmup:]), "flops_per_step": flops, **memory.result()}


def forward_flops(family, batch) -> float:
    """FLOPs of one forward of the architecture on `batch`'s shapes, counted on the meta device (no memory)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    key = json.loads((Path(family.cfg.pretrained_model_name_or_path) / "realsize.json").read_text())
    cls, config = transformer_config(key["key"], key["layers"])
    with torch.device("meta"):
        model = cls.from_config(config).to(torch.bfloat16)

    def meta(t):
        return torch.empty_like(t, device="meta", dtype=torch.bfloat16 if t.is_floating_point() else t.dtype)

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        family.predict(model, meta(batch.latents), torch.full((batch.latents.shape[0],), 0.5, device="meta"),
                       {k: meta(v) for k, v in batch.text.items()})
    return float(counter.get_total_flops())


def child(args) -> None:
    config_dir = Path(args.config)
    run = run_ours if args.variant == "ours" else run_bare
    print("RESULT " + json.dumps(run(config_dir, args.steps, args.warmup)), flush=True)


def run_child(variant: str, config_dir: Path, steps: int, warmup: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--config", str(config_dir),
                           "--steps", str(steps), "--warmup", str(warmup)], capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        raise RuntimeError(f"{variant} run failed: {lines[-1] if lines else proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


# --- the table -----------------------------------------------------------------------------------

def peak_tflops(override: float | None) -> tuple[float | None, str]:
    import torch

    if override:
        return override, f"{override} TFLOP/s (--peak-tflops)"
    if not torch.cuda.is_available():
        return None, "the CPU (no MFU)"
    name = torch.cuda.get_device_name()
    peak = next((tflops for part, tflops in PEAK_BF16_TFLOPS if part in name), None)
    return peak, f"{name}, dense bf16 peak {peak or 'unknown (give --peak-tflops)'} TFLOP/s"


def rows_for(wanted: list[str] | None) -> list[tuple]:
    from tuner.engine import families
    from tuner.presets import list_presets

    presets = {p.name: p for p in list_presets() if p.gpus > 0}
    rows = [(p, families.card(p.model_family).size_for(p.config.get("pretrained_model_name_or_path")).key)
            for p in presets.values()]
    rows += [(presets[name], key) for name, key in EXTRA_ROWS if name in presets]
    unknown = set(wanted or ()) - set(presets)
    if unknown:
        sys.exit(f"unknown preset(s) {sorted(unknown)}; known: {', '.join(presets)}")
    return [(p, key) for p, key in rows if key in SHAPES and (not wanted or p.name in wanted)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the smoke test: few layers, small sizes, 3 steps")
    parser.add_argument("--presets", help="comma-separated preset names (default: every GPU preset)")
    parser.add_argument("--steps", type=int, help="steps per run (default 20, --cpu 3)")
    parser.add_argument("--layers", type=int, help="transformer blocks (default: all; --cpu 1)")
    parser.add_argument("--work", type=Path, help="where models, data and runs go (default: a temporary folder)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return 0
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for the smoke test")
        return 0
    steps = args.steps or (3 if args.cpu else 20)
    layers = args.layers or (1 if args.cpu else None)
    warmup = min(5, steps // 2) if args.cpu or steps < 10 else 5
    work = args.work or Path(tempfile.mkdtemp(prefix="tuner-realsize-"))
    peak, device = peak_tflops(args.peak_tflops)
    print(f"{device}; {steps} steps a run, median s/step after {warmup}; "
          f"{'all' if layers is None else layers} transformer block(s); work folder {work}", flush=True)
    header = (f"{'preset':28} {'architecture':13} {'ours s/step':>11} {'bare s/step':>11} {'ours/bare':>9} "
              f"{'samples/s':>9} {'peak GiB':>8} {'NVML GiB':>8} {'estimate':>8} {'TFLOP/step':>10} {'MFU':>6}  note")
    lines, failed = [], 0
    for preset, key in rows_for(args.presets.split(",") if args.presets else None):
        started = time.perf_counter()
        row = work / "runs" / f"{preset.name}-{key}"
        shutil.rmtree(row, ignore_errors=True)
        try:
            model = build_model(key, preset.model_family, work / "models", layers)
            config_dir, notes = write_config(preset, model, row, steps, args.cpu)
            ours = run_child("ours", config_dir, steps, warmup)
            shutil.rmtree(row / "output")  # its stop checkpoint: the bare run's config must pass the check again
            bare = run_child("bare", config_dir, steps, warmup)
        except Exception as exc:  # noqa: BLE001 - one row's failure must not hide the others
            failed += 1
            lines.append(f"{preset.name:28} {key:13} FAILED: {str(exc).splitlines()[0][:200]}")
            print(lines[-1], "\n", str(exc)[-3000:], file=sys.stderr, flush=True)
            continue
        config = json.loads((config_dir / "config.json").read_text())
        batch = config.get("train_batch_size", 1) * config.get("gradient_accumulation_steps", 1)
        flops = bare["flops_per_step"]
        mfu = f"{100 * flops / ours['s_per_step'] / (peak * 1e12):5.1f}%" if peak else "-"
        nvml = f"{ours['nvml_gib']:8.2f}" if ours["nvml_gib"] is not None else f"{'-':>8}"
        notes.append(f"{time.perf_counter() - started:.0f} s")
        lines.append(f"{preset.name:28} {key:13} {ours['s_per_step']:11.4f} {bare['s_per_step']:11.4f} "
                     f"{ours['s_per_step'] / bare['s_per_step']:9.3f} {batch / ours['s_per_step']:9.2f} "
                     f"{ours['peak_gib']:8.2f} {nvml} {vram_estimate_gb(config_dir):8.2f} {flops / 1e12:10.3f} "
                     f"{mfu:>6}  {'; '.join(notes)}")
        print(lines[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(lines))
    print("peak: the torch allocator's on a GPU, the process's RSS on the CPU; estimate: engine/vram.py's training "
          "peak (GiB); model FLOPs: 3x the forward's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
