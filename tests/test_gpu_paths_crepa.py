"""CREPA on several GPUs: its projection head sits outside the DDP-wrapped model, yet every process
must train the same head. Two real processes joined by gloo run the real training loop on the tiny
Sana Video, each on its own clips, and write the head they ended with."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import torchrun_script
from video_fixtures import video_config

SCRIPT = """
import os, sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

from tuner.engine.config import load_bundle
from tuner.engine.events import EventWriter
from tuner.engine.train import crepa, loop
from tuner.engine.train.control import Control

config_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
# The encoder is built before the loop seeds anything, so the head's first values come from the loop's RNG.
encoder = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, patch_size=14, image_size=28))
crepa.load_encoder = lambda name, size, device, dtype: crepa.FrameEncoder(encoder, size)
made = []


def recorded(*args, **kw):
    term = crepa.CREPA(*args, **kw)
    made.append(term)
    rank = int(os.environ["RANK"])
    save_file({k: v.clone() for k, v in term.head.state_dict().items()}, str(out / f"first-head-{rank}.safetensors"))
    return term


loop.CREPA = recorded
result = loop.train(load_bundle(config_dir), events=EventWriter(None), control=Control(out / "control"),
                    preview_dir=out / "previews")
rank = int(os.environ["RANK"])
save_file({k: v.contiguous() for k, v in made[0].head.state_dict().items()}, str(out / f"head-{rank}.safetensors"))
print(f"rank {rank} trained {result.step} steps", flush=True)
"""


@pytest.mark.slow
def test_every_process_trains_the_same_crepa_head(tmp_path, tiny_sanavideo):
    config = video_config(tmp_path, tiny_sanavideo, clips=4, train_batch_size=1, max_train_steps=3,
                          crepa_enabled=True, crepa_block_index=1, crepa_encoder="dinov2_vits14",
                          crepa_encoder_image_size=28, crepa_lambda=1.0, gradient_accumulation_steps=2)
    script = tmp_path / "crepa_ranks.py"
    script.write_text(SCRIPT)
    proc = torchrun_script(str(script), str(config), str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rank 0 trained 3 steps" in out and "rank 1 trained 3 steps" in out, out[-4000:]
    first = [load_file(str(tmp_path / f"first-head-{rank}.safetensors")) for rank in (0, 1)]
    last = [load_file(str(tmp_path / f"head-{rank}.safetensors")) for rank in (0, 1)]
    for key in last[0]:
        assert torch.equal(first[0][key], first[1][key]), f"{key} started differently on the two processes"
        assert torch.equal(last[0][key], last[1][key]), f"{key} differs between the two processes after training"
    assert any(not torch.equal(first[0][key], last[0][key]) for key in last[0]), "training did not move the head"
