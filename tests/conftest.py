"""Test-wide settings: never reach a model hub or a tracker's server; one tiny Sana built per session."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Configs that set report_to: wandb (SimpleTuner's quickstarts) log offline, never trying the network.
os.environ.setdefault("WANDB_MODE", "offline")
# Runs compared weight for weight must not change thread counts with the machine's load (cpu_share.py).
os.environ.setdefault("TUNER_CPU_THREADS", "off")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sana(tmp_path_factory):
    """A tiny Sana in diffusers format, built once for the whole session."""
    from tuner.engine.tiny import build_tiny_sana

    return build_tiny_sana(tmp_path_factory.mktemp("tiny-sana") / "model")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory):
    """A tiny SD3 in diffusers format, built once for the whole session."""
    from tuner.engine.tiny import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3") / "model")


@pytest.fixture(scope="session")
def tiny_sanavideo(tmp_path_factory):
    """A tiny Sana Video in diffusers format, built once for the whole session."""
    from tuner.engine.tiny import build_tiny_sanavideo

    return build_tiny_sanavideo(tmp_path_factory.mktemp("tiny-sanavideo") / "model")
