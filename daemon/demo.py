"""`tunerd demo`: the README's main job — write the built-in demo, start the daemon when it is not
running, submit the demo as a job and watch it live (Ctrl-C detaches; the job goes on)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuner.daemon import lifecycle
from tuner.daemon.client import Client


def run_demo(args: argparse.Namespace) -> int:
    # The demo's model and dataset are built here, in this command's process (torch is imported
    # only now, never when the daemon or the TUI start).
    from tuner.engine.demo import new_run_dir, write_demo_config

    print("preparing the demo: a tiny Sana built from config and a generated dataset of shapes …", flush=True)
    output = new_run_dir(Path(args.dir))
    config_dir = write_demo_config(Path(args.dir), steps=args.steps, output_dir=output)
    already, info = lifecycle.start()
    if not already:
        print(f"started tunerd (pid {info['pid']}); it keeps running after the demo: `tunerd stop` stops it")
    with Client() as client:
        reply = client.request("submit", path=str(config_dir), cwd=os.getcwd(), name="sana-tiny-demo", gpus=0)
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
