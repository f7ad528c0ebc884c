"""Benchmark: the engine's training step against a bare hand-written flow-matching loop.

Same model folder, same cached batches, same optimizer, each variant in its own process (so
peak memory is its own). Prints seconds per step, samples/s, peak RSS and the ratio ours/bare.
Then the same run sharing the machine: idle, and beside one busy process (a fair share of 2 cores
is 2x the idle step), with the engine's adaptive thread count (engine/train/cpu_share.py) and
with torch's fixed default (TUNER_CPU_THREADS=off). Last, the small model eager and compiled
(dynamo_backend inductor, one graph for all blocks): s/step, and the first step that compiles; and
with and without TREAD token routing (tread_config): s/step and the loss of the last steps.
Run: `make bench` or `python bench/step_speed.py [--steps N] [--sizes tiny,small] [--sharing-steps N]
[--compile-steps N] [--routing-steps N]` (0 skips a part; `--sizes ""` skips the first table).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# "small": a wider, deeper Sana than the tests' tiny one (still CPU-sized).
SIZES = {
    "tiny": {},
    "small": {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16,
              "num_cross_attention_heads": 4, "cross_attention_head_dim": 16, "cross_attention_dim": 64},
}


def build_model(size: str, root: Path) -> Path:
    from tuner.engine.tiny import build_tiny_sana

    folder = build_tiny_sana(root / "tiny")
    if size == "tiny":
        return folder
    from diffusers import SanaTransformer2DModel

    out = root / size
    if not (out / "model_index.json").exists():
        import shutil

        shutil.copytree(folder, out, dirs_exist_ok=True)
        config = dict(SanaTransformer2DModel.load_config(folder / "transformer"))
        config.update(SIZES[size])
        import torch

        torch.manual_seed(0)
        SanaTransformer2DModel.from_config(config).save_pretrained(out / "transformer")
    return out


def config_for(model: Path, work: Path, steps: int, batch: int, **extra) -> Path:
    from tuner.presets.demo import write_demo_config

    return write_demo_config(work, model_dir=model, images=16, max_train_steps=steps, train_batch_size=batch,
                             optimizer="adamw", mixed_precision="no", validation_disable=True,
                             validation_step_interval=0, checkpoint_step_interval=0, use_ema=False,
                             caption_dropout_probability=0.0, lr_scheduler="constant", lr_warmup_steps=0, **extra)


def run_ours(config_dir: Path, steps: int) -> dict:
    from tuner.engine.config import load_bundle
    from tuner.engine.events import EventWriter
    from tuner.engine.train.control import Control
    from tuner.engine.train.loop import train

    started = time.perf_counter()
    bundle = load_bundle(config_dir)
    work = config_dir.parent / "job"
    work.mkdir(exist_ok=True)
    first_step_at: list[float] = []

    def listener(event):
        if event["type"] == "progress" and not first_step_at:
            first_step_at.append(time.perf_counter() - started)

    events = EventWriter(work / "events.jsonl")
    events.add_listener(listener)
    result = train(bundle, events=events, control=Control(work), preview_dir=work / "previews", stop_after=steps)
    times = result.step_seconds[5:]  # the first steps warm up allocators and kernels
    late = [loss for _, loss in result.losses[-20:]]
    return {"s_per_step": statistics.median(times), "start_to_first_step_s": first_step_at[0],
            "first_step_s": result.step_seconds[0], "late_loss": sum(late) / len(late)}


def run_bare(config_dir: Path, steps: int) -> dict:
    """The minimal loop: the same model and cached batches, nothing else."""
    import torch
    from diffusers import SanaTransformer2DModel

    from tuner.engine.config import load_bundle
    from tuner.engine.data import prepare_data
    from tuner.engine.models.sana import SanaFamily

    bundle = load_bundle(config_dir)
    cfg = bundle.train
    family = SanaFamily(cfg, torch.device("cpu"), torch.float32)
    family.load_text_encoders()
    family.load_vae()
    data = prepare_data(bundle, family)
    batches = [data.next_batch() for _ in range(steps)]
    family.unload_text_encoders()
    model = SanaTransformer2DModel.from_pretrained(cfg.pretrained_model_name_or_path, subfolder="transformer")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(0)
    times = []
    for batch in batches:
        t = time.perf_counter()
        x0 = batch.latents
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=gen)).view(-1, 1, 1, 1)
        noisy = (1 - sigma) * x0 + sigma * noise
        pred = model(noisy, encoder_hidden_states=batch.text["prompt_embeds"],
                     encoder_attention_mask=batch.text["prompt_attention_mask"],
                     timestep=sigma.flatten() * 1000).sample
        loss = torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return {"s_per_step": statistics.median(times[5:])}


def child(args) -> None:
    config_dir = Path(args.config)
    out = run_ours(config_dir, args.steps) if args.variant == "ours" else run_bare(config_dir, args.steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def process_start_to_first_step(config_dir: Path, job_dir: Path) -> float:
    """Seconds from launching `python -m tuner.engine JOB_DIR` (imports included) to its first progress event."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "multidatabackend.json", "user_prompt_library.json"):
        (job_dir / name).write_bytes((config_dir / name).read_bytes())
    events = job_dir / "events.jsonl"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tuner.engine", str(job_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            if events.exists() and '"type": "progress"' in events.read_text():
                return time.perf_counter() - started
            time.sleep(0.05)
        sys.exit(f"the engine exited ({proc.returncode}) before its first step; see {job_dir}")
    finally:
        proc.kill()
        proc.wait()


def run_child(variant: str, config: Path, steps: int, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--config", str(config),
                           "--steps", str(steps)], capture_output=True, text=True, env=env)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{variant} ({config}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def sharing(model: Path, work: Path, steps: int, batch: int) -> None:
    """Median s/step idle and beside one busy process, adaptive threads vs torch's fixed default."""
    rows = []
    for policy in ("auto", "off"):
        env = {**os.environ, "TUNER_CPU_THREADS": policy}
        env.pop("OMP_NUM_THREADS", None)
        figures = []
        for competitor in (False, True):
            config = config_for(model, work / f"{policy}-{int(competitor)}", steps, batch)
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
            try:
                figures.append(run_child("ours", config, steps, env)["s_per_step"])
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
        rows.append((policy, *figures))
    print(f"\nsharing the machine: tiny, batch {batch}, {steps} steps, median s/step, {os.cpu_count()} CPUs")
    print(f"{'threads':28} {'idle':>8} {'1 busy process':>15} {'ratio':>6}")
    names = {"auto": "adaptive (default)", "off": "torch's fixed (=off)"}
    for policy, idle, contended in rows:
        print(f"{names[policy]:28} {idle:8.4f} {contended:15.4f} {contended / idle:6.2f}")
    (_, auto_idle, _), (_, off_idle, _) = rows
    print(f"adaptive idle / fixed idle: {auto_idle / off_idle:.3f} (the goal: at most 1.05; "
          f"contended / idle at most 2.2 on 2 cores)")


def compiling(model: Path, work: Path, steps: int, batch: int) -> None:
    """Median s/step eager and compiled with inductor (each block in place), and the compiling first step."""
    rows = [(backend, run_child("ours", config_for(model, work / backend, steps, batch, dynamo_backend=backend),
                                steps)) for backend in ("no", "inductor")]
    print(f"\ncompiling: small, batch {batch}, {steps} steps, median s/step after 5 warm-up steps")
    print(f"{'dynamo_backend':16} {'s/step':>8} {'first step':>11} {'vs eager':>9}")
    eager = rows[0][1]["s_per_step"]
    for backend, r in rows:
        print(f"{backend:16} {r['s_per_step']:8.4f} {r['first_step_s']:10.1f}s {r['s_per_step'] / eager:9.2f}")


def routing(model: Path, work: Path, steps: int, batch: int) -> None:
    """Median s/step and the last steps' mean loss with and without TREAD (half the tokens past blocks 1..2)."""
    route = {"routes": [{"selection_ratio": 0.5, "start_layer_idx": 1, "end_layer_idx": 2}]}
    rows = [(name, run_child("ours", config_for(model, work / name, steps, batch, **extra), steps))
            for name, extra in (("every token", {}), ("TREAD 50% past 1..2", {"tread_config": route}))]
    print(f"\ntoken routing: small (4 blocks), batch {batch}, {steps} steps, median s/step after 5 warm-up steps")
    print(f"{'':22} {'s/step':>8} {'vs all':>7} {'loss, last 20 steps':>20}")
    plain = rows[0][1]["s_per_step"]
    for name, r in rows:
        print(f"{name:22} {r['s_per_step']:8.4f} {r['s_per_step'] / plain:7.2f} {r['late_loss']:20.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--sharing-steps", type=int, default=300, help="0 skips the sharing figures")
    parser.add_argument("--compile-steps", type=int, default=60, help="0 skips the compile figures")
    parser.add_argument("--routing-steps", type=int, default=200, help="0 skips the token-routing figures")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)
    root = Path(tempfile.mkdtemp(prefix="tuner-bench-"))
    rows = []
    for size in filter(None, args.sizes.split(",")):
        model = build_model(size, root / "models")
        results = {}
        for variant in ("bare", "ours"):
            config = config_for(model, root / size / variant, args.steps, args.batch)
            results[variant] = run_child(variant, config, args.steps)
        ours, bare = results["ours"], results["bare"]
        fresh = config_for(model, root / size / "process", args.steps, args.batch)
        # Twice: the first run fills the caches, the second is what a user sees on a rerun.
        cold = process_start_to_first_step(fresh, root / size / "process-job-1")
        import shutil
        shutil.rmtree(root / size / "process" / "output", ignore_errors=True)
        warm = process_start_to_first_step(fresh, root / size / "process-job-2")
        ours["process_to_first_step"] = (cold, warm)
        rows.append((size, ours, bare))
    if rows:
        print(f"\nbatch {args.batch}, 64 px, {args.steps} steps, median s/step after 5 warm-up steps, "
              f"{os.cpu_count()} CPUs")
        print(f"{'model':6} {'ours s/step':>12} {'bare s/step':>12} {'ratio':>6} {'ours img/s':>10} "
              f"{'ours peak MB':>12} {'bare peak MB':>12} {'train()→step 1':>15} {'process→step 1 cold/warm':>25}")
    for size, ours, bare in rows:
        cold, warm = ours["process_to_first_step"]
        print(f"{size:6} {ours['s_per_step']:12.4f} {bare['s_per_step']:12.4f} "
              f"{ours['s_per_step'] / bare['s_per_step']:6.2f} {args.batch / ours['s_per_step']:10.1f} "
              f"{ours['peak_rss_mb']:12.0f} {bare['peak_rss_mb']:12.0f} {ours['start_to_first_step_s']:14.1f}s "
              f"{cold:17.1f}s / {warm:.1f}s")
    if args.sharing_steps:
        sharing(build_model("tiny", root / "models"), root / "sharing", args.sharing_steps, args.batch)
    if args.compile_steps:
        compiling(build_model("small", root / "models"), root / "compile", args.compile_steps, args.batch)
    if args.routing_steps:
        routing(build_model("small", root / "models"), root / "routing", args.routing_steps, args.batch)


if __name__ == "__main__":
    main()
