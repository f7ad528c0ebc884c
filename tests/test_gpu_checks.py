"""bench/gpu_checks.py, the checks for a CUDA machine: on this CPU-only one it says so and exits cleanly;
and bench/shapes.py, the shapes the GPU checks and bench/realsize.py build their random-weight models
in, are the published checkpoints' (their parameter counts are the family cards')."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPT = BENCH / "gpu_checks.py"
pytestmark = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA machine runs the checks themselves")


def _module(path: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_cleanly():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "no CUDA device: skipped"


def test_it_lists_every_check_and_refuses_an_unknown_one():
    listed = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=300)
    assert listed.stdout.split() == list(_module().CHECKS) and len(listed.stdout.split()) == 8
    wrong = subprocess.run([sys.executable, str(SCRIPT), "--only", "nope"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "unknown check" in wrong.stderr


@pytest.mark.parametrize("key, family", [("sd3.5-large", "sd3"), ("sd3.5-medium", "sd3"), ("sana-1.6b", "sana"),
                                         ("sana-600m", "sana"), ("sanavideo-2b", "sanavideo")])
def test_the_random_models_have_the_published_shapes(key, family):
    from accelerate import init_empty_weights

    from tuner.engine import vram

    module = _module(BENCH / "shapes.py")
    cls, config = module.transformer_config(key)
    with init_empty_weights():
        model = cls.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    published = vram.known_model(module.SHAPES[key][0], family)["params"]
    assert abs(params - published) / published < 0.01, (params, published)
