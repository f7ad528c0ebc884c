"""Uploading a run to the Hugging Face Hub: push_to_hub's background uploads during a run, and
`tuner push OUTPUT_DIR` for later. Torch-free; huggingface_hub is imported only when uploading.

The final export goes to the repo's root (pipeline/ with its model card, pipeline-ema/ into ema/),
each checkpoint into checkpoint-<step>/ when push_checkpoints_to_hub asks. Uploads use the user's
own login (`hf auth login` or HF_TOKEN). A new repo is created private: nothing becomes public by
accident, and the Hub's settings page makes it public in one click. Nothing local is changed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.engine.events import EventWriter

if TYPE_CHECKING:
    from tuner.engine.config import ConfigBundle

EXPORTS = (("pipeline", ""), ("pipeline-ema", "ema"))   # output_dir folder → where it goes in the repo
STILL_UPLOADING_EVERY_S = 60   # a waiting run says so this often (also keeps tunerd's stall watchdog informed)


def repo_for(bundle: ConfigBundle) -> str:
    """The repo a run pushes to: hub_model_id, else the output folder's name (in the user's namespace)."""
    return bundle.train.hub_model_id or bundle.resolve(bundle.train.output_dir).name


def push_later(output_dir: Path, repo: str, checkpoints: bool = False) -> str:
    """The command that uploads a run's folders afterwards."""
    return f"tuner push {output_dir} --repo {repo}" + (" --checkpoints" if checkpoints else "")


def targets(output_dir: Path, checkpoints: bool = False) -> list[tuple[Path, str]]:
    """(folder, path in the repo) for what a run leaves to share: its exports, and its checkpoints when asked."""
    found = [(output_dir / name, in_repo) for name, in_repo in EXPORTS if (output_dir / name).is_dir()]
    if checkpoints:
        found += [(p, p.name) for p in sorted(output_dir.glob("checkpoint-*"), key=_step) if p.is_dir()]
    return found


def _step(path: Path) -> int:
    tail = path.name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def why_not_now() -> str | None:
    """Why no upload can start on this machine now (offline mode, no login), or None."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set (unset it to upload)"
    if get_token() is None:
        return "not logged in to the Hugging Face Hub (run `hf auth login`, or set HF_TOKEN)"
    return None


def describe(exc: BaseException) -> str:
    """A failed upload in one line a user can act on."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set (unset it to upload)"
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            return f"the Hub refused the login (HTTP {status}): log in with a write token (`hf auth login`); {first}"
        return f"the Hub answered HTTP {status}: {first}"
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ConnectError", "ConnectionError", "ConnectTimeout", "TimeoutException", "NetworkError", "TimeoutError"}:
        return f"cannot reach {constants.ENDPOINT} ({type(exc).__name__}: {first or 'no answer'})"
    return f"{type(exc).__name__}: {first}"


def upload(repo: str, folder: Path, path_in_repo: str, message: str, private: bool = True) -> str:
    """Create the repo if needed and upload `folder` into it; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    # A bare name lands in the user's namespace; the returned id is the full owner/name.
    repo_id = api.create_repo(repo, private=private, exist_ok=True).repo_id
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), path_in_repo=path_in_repo or None,
                             commit_message=message)
    return str(info.commit_url)


def _size(folder: Path) -> str:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GB"


class HubPush:
    """A run's uploads, one after another in a background thread, each announced and its result said.

    The first reason uploads cannot happen (offline, no login, an upload that failed) is one warning
    naming the command that pushes later; after it nothing more is tried.
    """

    def __init__(self, bundle: ConfigBundle, output_dir: Path, events: EventWriter):
        self.repo = repo_for(bundle)
        self.later = push_later(output_dir, self.repo, bundle.train.push_checkpoints_to_hub)
        self.output_dir = output_dir
        self.events = events
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-push")
        self.pending: list[tuple[str, Future, Path]] = []   # what, its upload, the folder it reads
        self.off = False
        reason = why_not_now()
        if reason:
            self._give_up(reason)

    def upload(self, folder: Path, path_in_repo: str, what: str) -> None:
        """Queue `folder` for upload into `path_in_repo` of the repo (returns at once)."""
        if not self.off:
            self.pending.append((what, self.pool.submit(self._upload, folder, path_in_repo, what), folder))

    def in_flight(self) -> set[Path]:
        """The folders queued or being uploaded: checkpoint rotation must leave them be until they are done."""
        return {folder for _what, future, folder in self.pending if not future.done()}

    def upload_exports(self, step: int, ema: bool) -> None:
        """Queue the final export: pipeline/ to the repo's root, pipeline-ema/ (when trained with EMA) into ema/."""
        for name, path_in_repo in EXPORTS:
            if name == "pipeline" or ema:
                self.upload(self.output_dir / name, path_in_repo, f"{name}/ at step {step}")

    def wait(self) -> None:
        """Block until every queued upload has ended, saying now and then that they are still going."""
        if self.pending:
            self.events.emit("status", phase="saving", message=f"uploading to the Hub repo {self.repo}")
        started = time.monotonic()
        for what, future, _folder in self.pending:
            while True:
                try:
                    future.result(timeout=STILL_UPLOADING_EVERY_S)
                    break
                except FutureTimeout:
                    minutes = (time.monotonic() - started) / 60
                    self.events.emit("log", level="info", message=f"still uploading {what} to the Hub repo "
                                     f"{self.repo} ({minutes:.0f} min so far)")
        self.pending = []

    def close(self) -> None:
        """Wait for the upload that is running; the queued ones are dropped, and the warning says how to push them."""
        dropped = [what for what, future, _folder in self.pending if future.cancel()]
        self.pool.shutdown(wait=True)
        if dropped and not self.off:
            self._give_up(f"the run ended before {', '.join(dropped)} went up")

    def _upload(self, folder: Path, path_in_repo: str, what: str) -> None:
        if self.off:
            return
        where = f"{self.repo}/{path_in_repo}" if path_in_repo else self.repo
        self.events.emit("log", level="info", message=f"uploading {what} ({_size(folder)}) to the Hub repo {where}")
        began = time.monotonic()
        try:
            url = upload(self.repo, folder, path_in_repo, f"tuner: {what}")
        except Exception as exc:  # no network, a refused login, a full quota: said once, the run goes on
            self._give_up(f"uploading {what} failed: {describe(exc)}")
            return
        self.events.emit("log", level="info", message=f"uploaded {what} to {url} in {time.monotonic() - began:.0f} s "
                         "(a repo tuner created is private: make it public in its settings on the Hub)")

    def _give_up(self, reason: str) -> None:
        self.off = True
        self.events.emit("log", level="warning", message=f"push_to_hub: {reason}; nothing is uploaded from here on "
                         f"and the files stay in {self.output_dir}; push them later with `{self.later}`")


# --- tuner push --------------------------------------------------------------------------------

def _configured_repo(output_dir: Path) -> str | None:
    """hub_model_id from the run's own config.json, when it has one."""
    try:
        config = json.loads((output_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("hub_model_id", config.get("--hub_model_id")) if isinstance(config, dict) else None
    return value if isinstance(value, str) and value else None


def command(args: argparse.Namespace) -> int:
    """`tuner push OUTPUT_DIR`: upload a run's exported folders (and checkpoints with --checkpoints)."""
    output_dir = Path(args.path).resolve()
    if not output_dir.is_dir():
        print(f"tuner push: {output_dir} is not a folder; give a run's output_dir", file=sys.stderr)
        return 1
    found = targets(output_dir, args.checkpoints)
    if not found and (any(output_dir.glob("*.safetensors")) or (output_dir / "model_index.json").is_file()):
        found = [(output_dir, "")]   # an exported folder itself
    if not found:
        print(f"tuner push: {output_dir} holds no pipeline/ or pipeline-ema/ folder (nor checkpoints, with "
              "--checkpoints); give the output_dir of a finished run", file=sys.stderr)
        return 1
    repo = args.repo or _configured_repo(output_dir) or output_dir.name
    reason = why_not_now()
    if reason:
        print(f"tuner push: cannot upload: {reason}", file=sys.stderr)
        return 1
    for folder, path_in_repo in found:
        if not (folder / "README.md").is_file() and not folder.name.startswith("checkpoint-"):
            print(f"note: {folder} has no README.md model card (runs write one at export)")
        where = f"{repo}/{path_in_repo}" if path_in_repo else repo
        print(f"uploading {folder} ({_size(folder)}) to {where} ...", flush=True)
        try:
            url = upload(repo, folder, path_in_repo, f"tuner push: {folder.name}", private=not args.public)
        except Exception as exc:  # every failure is one clear line, never a traceback
            print(f"tuner push: could not upload {folder} to {repo}: {describe(exc)}", file=sys.stderr)
            return 1
        print(f"uploaded: {url}")
    return 0

