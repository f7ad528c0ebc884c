"""`tunerd demo`: the README's main job — write the built-in demo, start the daemon when it is not
running, submit the demo as a job and watch it live (Ctrl-C detaches; the job goes on).

This client stays torch-free, like the daemon: the demo's tiny model is built in a child
process, and the daemon's engine process does the training."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuner.daemon import lifecycle
from tuner.daemon.client import Client
from tuner.engine.demo import new_run_dir
from tuner.presets.demo import DEMO_PRESET, write_demo_config


def run_demo(args: argparse.Namespace) -> int:
    print("preparing the demo: a tiny Sana built from config and a generated dataset of shapes …", flush=True)
    output = new_run_dir(Path(args.dir))
    config_dir = write_demo_config(Path(args.dir), steps=args.steps, output_dir=output, isolated=True)
    already, info = lifecycle.start()
    if not already:
        print(f"started tunerd (pid {info['pid']}); it keeps running after the demo: `tunerd stop` stops it")
    with Client() as client:
        reply = client.request("submit", path=str(config_dir), cwd=os.getcwd(), name=DEMO_PRESET, gpus=0)
    job = reply["job"]["id"]
    print(f"submitted {job}")
    if args.no_attach:
        print(f"watch it: tunerd attach {job}   (or tuner-tui)")
        return 0
    from tuner.daemon.attach import attach

    code = attach(job)
    print(f"validation images and previews: {output / 'validation_images'}\n"
          f"trained pipeline (diffusers):   {output / 'pipeline'}\n"
          f"the config it ran:              {config_dir}")
    return code
