"""`tuner`: the engine's standalone commands. Each subcommand lives in its own module and is
imported only when run, so `tuner check` and `tuner hardware` never load torch."""
from __future__ import annotations

import argparse
import importlib
import sys

from tuner.engine import families

# subcommand → (module, function); the function takes the parsed args and returns an exit code.
COMMANDS = {
    "check": ("tuner.engine.config.check", "command"),
    "hardware": ("tuner.engine.hardware", "command"),
    "presets": ("tuner.presets", "command"),
    "train": ("tuner.engine.runner", "command"),
    "slurm": ("tuner.engine.runner", "slurm_command"),
    "demo": ("tuner.presets.demo", "command"),
    "tiny": ("tuner.engine.tiny", "command"),
    "push": ("tuner.engine.hub", "command"),
    "merge": ("tuner.engine.merge", "command"),
}


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    """The process-placement flags, as accelerate launch names them."""
    p.add_argument("--num-processes", type=int, default=1,
                   help="processes in total over all machines (GPUs, or gloo CPU processes without CUDA)")
    p.add_argument("--num-machines", type=int, default=1, help="machines taking part (default 1)")
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank, 0 on the main one")
    p.add_argument("--main-process-ip", help="the address of machine rank 0 (several machines)")
    p.add_argument("--main-process-port", type=int, help="its rendezvous port (default 29500)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuner", description="Fine-tune diffusion models: check a config folder, "
                                     "see this machine's hardware, rank the presets for it, and train in this terminal "
                                     "(tunerd runs jobs in the background, tuner-tui is the terminal app).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate a config folder (config.json, multidatabackend.json, prompt library)")
    p.add_argument("path", help="a config folder or a config.json / config.toml")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--no-data", action="store_true",
                   help="check the settings only, without scanning the datasets as a run would")

    p = sub.add_parser("hardware", help="show the GPUs, RAM, CPUs and free disk this machine has")
    p.add_argument("--path", default=".", help="where to measure free disk (default: here)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("presets", help="list the shipped presets, ranked for this machine")
    p.add_argument("--family", help="only presets for this model_family")
    p.add_argument("--vram-gb", type=float, help="plan for GPUs with this much VRAM instead of the detected ones")
    p.add_argument("--gpus", type=int, help="plan for this many GPUs")
    p.add_argument("--show", metavar="NAME", help="print one preset's file")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("train", help="run a config folder (or a job directory) in this terminal; the job's "
                                     "files and events go to its output_dir")
    p.add_argument("path", help="a config folder, a config.json, or a job directory")
    p.add_argument("--plain", action="store_true", help="print log lines instead of the live display")
    add_launch_arguments(p)

    p = sub.add_parser("slurm", help="write an sbatch script that trains a config folder on several nodes")
    p.add_argument("path", help="a config folder or a config.json")
    p.add_argument("--nodes", type=int, required=True, help="machines (one launcher each)")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs (processes) per machine")
    p.add_argument("--partition", help="the Slurm partition")
    p.add_argument("--time", help="the time limit, as sbatch takes it (e.g. 24:00:00)")
    p.add_argument("--port", type=int, default=29500, help="the rendezvous port on the first node (default %(default)s)")
    p.add_argument("--out", help="where to write the script (default: OUTPUT_DIR/train.sbatch)")

    p = sub.add_parser("demo", help="train the built-in tiny Sana on a generated dataset in this terminal "
                                    "(`tunerd demo` runs it through the daemon)")
    p.add_argument("--dir", default="demo-runs/sana-tiny", help="where the demo writes (default: %(default)s)")
    p.add_argument("--steps", type=int, help="override max_train_steps")
    p.add_argument("--plain", action="store_true", help="print log lines instead of the live display")

    p = sub.add_parser("push", help="upload a run's exported model (and, if asked, its checkpoints) to the "
                                    "Hugging Face Hub with your login")
    p.add_argument("path", help="a run's output_dir (its pipeline/ and pipeline-ema/ go up), or an exported folder")
    p.add_argument("--repo", help="the Hub repo, owner/name (default: hub_model_id from the run's config.json, "
                                  "else the folder's name in your namespace)")
    p.add_argument("--checkpoints", action="store_true", help="also upload each checkpoint-<step>/ folder")
    p.add_argument("--public", action="store_true", help="create a new repo public (default: private)")

    p = sub.add_parser("merge", help="fold a trained LoRA or LoKr into a full diffusers folder (for tools "
                                     "that take no adapters)")
    p.add_argument("adapter", help="the adapter's folder, or the run's output_dir (its pipeline/)")
    p.add_argument("out", help="a new folder for the merged pipeline")
    p.add_argument("--into", metavar="BASE", help="the base pipeline: a diffusers folder or hub id (default: the "
                                                  "run's pretrained_model_name_or_path)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="the merged weights' dtype (default: the "
                                                                      "base's own)")

    p = sub.add_parser("tiny", help="build a tiny model of a family from config (for tests and demos)")
    p.add_argument("family", choices=[c.name for c in families.cards() if c.tiny], help="model family")
    p.add_argument("out", help="folder to write the diffusers-format model to")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func = COMMANDS[args.command]
    module = importlib.import_module(module_name)
    return int(getattr(module, func)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
