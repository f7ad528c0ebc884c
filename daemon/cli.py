"""`tunerd`: start and stop the daemon, submit and manage jobs, watch them."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

from tuner.daemon import lifecycle
from tuner.daemon import protocol as p
from tuner.daemon.client import Client


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunerd", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the daemon's reply as JSON (for scripts)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, job: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        if job:
            sp.add_argument("job", help="a job id (or a unique prefix of one)")
        return sp

    add("start", "start the daemon in the background").add_argument(
        "--foreground", action="store_true", help="run in this terminal instead (logs to stderr)")
    add("stop", "stop the daemon (running jobs keep training; --jobs stops them too)").add_argument(
        "--jobs", action="store_true", help="first ask every running job to checkpoint and stop")
    add("status", "is the daemon running, where, and how many jobs it has")
    sp = add("submit", "queue a job from a config folder (or config.json), or from a preset")
    sp.add_argument("path", nargs="?", help="a config folder or a config.json")
    sp.add_argument("--preset", help="quick start: a preset name (see `tuner presets`)")
    sp.add_argument("--dataset", help="quick start: a folder of images with .txt captions")
    sp.add_argument("--output", help="quick start: where checkpoints and results go")
    sp.add_argument("--name", help="name the job (default: the config folder's name)")
    sp.add_argument("--gpus", type=int, help="GPUs for this job (default 1; 0 = CPU)")
    sp.add_argument("--num-processes", type=int, help="processes: one per GPU (as --gpus N) on a GPU machine; "
                    "without GPUs, N CPU processes joined with gloo")
    add("list", "every job with its state and progress")
    add("show", "one job in full", job=True)
    sp = add("attach", "watch a job live (Ctrl-C detaches; the job goes on)")
    sp.add_argument("job", nargs="?", help="default: the newest running job")
    sp.add_argument("--since", type=int, default=0, metavar="SEQ",
                    help="with --json: start after the engine event SEQ (the last `seq` a script saw)")
    sp.add_argument("--since-daemon", type=int, default=0, metavar="SEQ",
                    help="with --json: start after the daemon event SEQ")
    sp = add("logs", "the engine's output for a job", job=True)
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    sp.add_argument("-n", "--lines", type=int, default=100, help="lines from the end (default %(default)s)")
    add("cancel", "end a job now (SIGTERM, then SIGKILL); no checkpoint", job=True)
    add("stop-job", "ask a job to save a checkpoint and stop", job=True).add_argument(
        "--force", action="store_true", help="a stalled engine cannot answer: end it now (as `cancel`)")
    add("save", "ask a job to save a checkpoint now and go on", job=True)
    add("sample", "ask a job to run validation now and go on", job=True)
    add("resume", "run an ended job again from its latest checkpoint", job=True)
    sp = add("demo", "train the built-in tiny Sana through the daemon and watch it (what `make demo` runs)")
    sp.add_argument("--dir", default="demo-runs/sana-tiny", help="where the demo writes (default: %(default)s)")
    sp.add_argument("--steps", type=int, help="override max_train_steps")
    sp.add_argument("--no-attach", action="store_true", help="submit and return without watching")
    sp = add("web", "the monitor in a browser: the jobs, live progress, loss, samples and log")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; any other "
                    "needs the printed access token)")
    sp.add_argument("--port", type=int, default=8765, help="port (default %(default)s)")
    add("rm", "delete a job that is not running (its outputs stay unless --outputs)", job=True).add_argument(
        "--outputs", action="store_true", help="also delete the job's output_dir")
    return parser


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _print_job_line(job: dict[str, Any]) -> None:
    step = f"{job['step']}/{job['total']}" if job.get("step") is not None else "-"
    loss = f"{job['loss']:.4f}" if isinstance(job.get("loss"), (int, float)) else "-"
    state = f"{job['state']}, stalled" if job.get("stalled") else job["state"]
    why = f"stalled: {job['stalled']}" if job.get("stalled") else job.get("reason") or ""
    print(f"{job['id']:<44} {state:<12} {step:>12} {loss:>9}  {why}")


def _jobs(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    reply = client.request("list")
    if not args.json:
        if not reply["jobs"]:
            print("no jobs; `tunerd submit CONFIG_FOLDER` queues one")
        else:
            print(f"{'JOB':<44} {'STATE':<12} {'STEP':>12} {'LOSS':>9}  REASON")
        for job in reply["jobs"]:
            _print_job_line(job)
    return reply


def _show(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    reply = client.request("show", job=args.job)
    if not args.json:
        job = reply["job"]
        for key in ("id", "state", "reason", "stalled", "phase", "source", "output_dir", "gpus", "devices", "pid",
                    "runs"):
            print(f"{key:>11}: {job.get(key)}")
        print(f"{'created':>11}: {_when(job['created'])}    updated: {_when(job['updated'])}")
        if reply.get("progress"):
            pr = reply["progress"]
            print(f"{'progress':>11}: step {pr.get('step')}/{pr.get('total')}  loss {pr.get('loss')}  lr {pr.get('lr')}")
        for found in reply.get("checkpoints", []):
            state = f"DAMAGED: {found['problem']}" if found["problem"] else "whole"
            print(f"{'checkpoint':>11}: step {found['step']}  {found['path']}  ({state})")
        for name, path in reply["files"].items():
            print(f"{name:>11}: {path}")
        print("    history:")
        for h in job.get("history", []):
            print(f"      {_when(h['time'])}  {h['state']:<12} {h.get('reason') or ''}")
    return reply


def _logs(client: Client, args: argparse.Namespace) -> dict[str, Any] | None:
    reply = client.request("logs", job=args.job, lines=args.lines)
    if args.json and not args.follow:
        return reply
    while True:
        # With --json, each piece is one JSON line, for scripts that follow the log.
        sys.stdout.write(json.dumps(reply) + "\n" if args.json else reply["text"])
        sys.stdout.flush()
        if not args.follow or reply["ended"]:
            return None
        if reply["offset"] >= reply["size"]:
            time.sleep(0.5)
        reply = client.request("logs", job=args.job, offset=reply["offset"])


def _submit(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {"cwd": os.getcwd(), "name": args.name, "gpus": args.gpus,
                               "processes": args.num_processes}
    if args.preset:
        if not (args.dataset and args.output):
            raise SystemExit("tunerd submit --preset NAME needs --dataset DIR and --output DIR")
        request.update(preset=args.preset, dataset=args.dataset, output=args.output)
    elif args.path:
        request["path"] = args.path
    else:
        raise SystemExit("tunerd submit needs a config folder, or --preset NAME --dataset DIR --output DIR")
    reply = client.request("submit", **{k: v for k, v in request.items() if v is not None})
    if not args.json:
        for warning in reply["warnings"]:
            print(f"warning: {warning}")
        print(f"queued {reply['job']['id']}  (watch it: tunerd attach {reply['job']['id']})")
    return reply


def _simple(verb: str):
    def run(client: Client, args: argparse.Namespace) -> dict[str, Any]:
        extra = {"outputs": args.outputs} if verb == "rm" else {}
        forced = verb == "stop_job" and args.force
        reply = client.request("cancel" if forced else verb, job=args.job, **extra)
        if not args.json:
            print(reply.get("message") or f"removed {', '.join(reply.get('removed', []))}")
        return reply
    return run


def _daemon_status(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    reply = client.request("status")
    if not args.json:
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(reply["jobs"].items())) or "no jobs"
        print(f"tunerd {reply['version']} running (pid {reply['pid']}) since {_when(reply['started'])}\n"
              f"  socket: {reply['socket']}\n  data:   {reply['data_dir']}\n"
              f"  GPUs:   {', '.join(reply['gpus']) or 'none (CPU, one job at a time)'}\n  jobs:   {jobs}")
    return reply


def _attach(client: Client, args: argparse.Namespace) -> None:
    job = args.job
    if job is None:
        running = [j for j in client.request("list")["jobs"] if j["state"] in p.ACTIVE_STATES]
        if not running:
            raise SystemExit("no job is running; name one: tunerd attach JOB (tunerd list shows them)")
        job = running[-1]["id"]
    if args.json:  # the first line is the job's record, as the stream's own reply carries it
        print(json.dumps(client.request("show", job=job)), flush=True)
    client.close()
    if args.json:
        # For scripts: the raw stream, one message per line, until the job ends; like the live
        # view it outlives a daemon restart, resuming after the last event it printed.
        import asyncio

        from tuner.daemon.client import follow

        async def stream() -> None:
            async for message in follow(job, args.since, args.since_daemon):
                print(json.dumps(message), flush=True)

        try:
            asyncio.run(stream())
        except KeyboardInterrupt:
            pass
        return None
    from tuner.daemon.attach import attach
    attach(job)
    return None


VERB_COMMANDS = {
    "status": _daemon_status, "submit": _submit, "list": _jobs, "show": _show, "logs": _logs,
    "attach": _attach, "cancel": _simple("cancel"), "stop-job": _simple("stop_job"),
    "save": _simple("save"), "sample": _simple("sample"), "resume": _simple("resume"), "rm": _simple("rm"),
}


def _start(args: argparse.Namespace) -> int:
    if args.foreground:
        from tuner.daemon.server import main as serve
        return serve()
    already, info = lifecycle.start()
    if args.json:
        print(json.dumps({"already_running": already, **info}))
    elif already:
        print(f"tunerd is already running (pid {info['pid']}, socket {info['socket']})")
    else:
        print(f"tunerd started (pid {info['pid']}, socket {info['socket']}, log {lifecycle.paths.daemon_log()})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    reply = lifecycle.stop(jobs=args.jobs)
    if args.json:
        print(json.dumps(reply))
    else:
        stopped = reply.get("stopped_jobs") or []
        print("tunerd stopped" + (f"; asked {len(stopped)} job(s) to checkpoint and stop" if stopped
                                  else "; no job was running" if args.jobs
                                  else "; running jobs go on and are re-adopted by the next `tunerd start`"))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "start":
            return _start(args)
        if args.command == "stop":
            return _stop(args)
        if args.command == "demo":
            from tuner.daemon.demo import run_demo
            return run_demo(args)
        if args.command == "web":
            from tuner.daemon.web import command as web
            return web(args.host, args.port)
        with Client() as client:
            reply = VERB_COMMANDS[args.command](client, args)
        if args.json and reply is not None:
            print(json.dumps(reply, indent=2))
        return 0
    except p.DaemonNotRunning as e:
        print(e, file=sys.stderr)
        return 1
    except p.RequestFailed as e:
        if args.json:
            print(json.dumps(e.reply, indent=2))
        else:
            print(f"tunerd: {e}", file=sys.stderr)
        return 1
    except (RuntimeError, ConnectionError) as e:
        print(f"tunerd: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
