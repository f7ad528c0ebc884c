"""`tuner check PATH [--json] [--no-data]`: report every error and warning in a config folder before a run:
the settings, then (unless --no-data) the datasets, scanned as a run would scan them."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from tuner.engine import checkpoints
from tuner.engine.config.bundle import ConfigBundle
from tuner.engine.config.io import load_bundle
from tuner.engine.config.issues import ConfigError, Issue, display
from tuner.engine.hardware import probe


def command(args: Any) -> int:
    """Print the findings as `file: key: message` lines (errors first) or JSON; exit 1 on any error."""
    # The GPU-dependent rules (fp8 needs compute capability 8.9, bf16 needs 8.0) judge the
    # machine the check runs on: the one that will train, in the usual case.
    hardware = probe()
    try:
        bundle = load_bundle(args.path, hardware=hardware)
    except ConfigError as e:
        issues = e.issues
    else:
        issues = list(bundle.warnings)
        if not args.no_data:
            # The datasets as training would scan them (the engine's data pipeline, never a model).
            from tuner.engine.data.preflight import data_issues

            issues += data_issues(bundle, processes=max(1, len(hardware.get("gpus") or [])))
        issues += checkpoint_issues(bundle)
    errors = [i for i in issues if i.level == "error"]
    warnings = [i for i in issues if i.level == "warning"]
    if getattr(args, "json", False):
        print(json.dumps({
            "path": str(args.path),
            "ok": not errors,
            "errors": [dataclasses.asdict(i) for i in errors],
            "warnings": [dataclasses.asdict(i) for i in warnings],
        }, indent=2))
    else:
        # Plain `file: key: message` lines under a heading per level, so tools can parse them.
        for heading, group in (("Errors:", errors), ("Warnings:", warnings)):
            if group:
                print(heading)
                for issue in group:
                    print(issue)
        print(f"{len(errors)} error{'s' * (len(errors) != 1)}, {len(warnings)} warning{'s' * (len(warnings) != 1)}")
    return 1 if errors else 0


def checkpoint_issues(bundle: ConfigBundle) -> list[Issue]:
    """The output folder's damaged checkpoints (by size: hashes are checked when a run resumes)."""
    output_dir = bundle.resolve(bundle.train.output_dir)
    found = checkpoints.states(output_dir, hashes=False)
    whole = [s for s in found if s.ok]
    issues = []
    for bad in (s for s in found if not s.ok):
        earlier_whole = [s for s in whole if s.step < bad.step]
        fallback = (f"resume_from_checkpoint: latest skips it and resumes from {earlier_whole[-1].path.name}"
                    if earlier_whole else "no earlier checkpoint is whole")
        issues.append(Issue("warning", display(bundle.config_path), "output_dir",
                            f"{bad.path} is damaged: {bad.problem}; {fallback} (the damaged one is kept)"))
    return issues
