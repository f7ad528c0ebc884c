"""An adapter (LoKr, as Sana trains one) on a quanto-quantised base on several GPUs: DDP is told to leave the quantised layers alone
(no broadcast at start, no buffer broadcasts, no gradient buckets), instead of relying on its
broadcast to cope with quanto's tensor subclasses. Two real processes joined by gloo run the real
training loop on the tiny Sana with an int8-quanto base; each reports what its DDP wrapper syncs."""
from __future__ import annotations

import json

import pytest

from engine_fixtures import demo_config, torchrun_script

SCRIPT = """
import json, os, sys
from pathlib import Path

import torch
from optimum.quanto import QTensor

from tuner.engine.config import load_bundle
from tuner.engine.events import EventWriter
from tuner.engine.train import loop
from tuner.engine.train.control import Control

config_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
seen = {}
ddp_init = torch.nn.parallel.DistributedDataParallel.__init__


def recording_init(self, module, *args, **kw):
    ddp_init(self, module, *args, **kw)
    params = dict(module.named_parameters())
    seen["quantised"] = sorted(n for n, p in params.items() if isinstance(p, QTensor))
    seen["trained"] = sorted(n for n, p in params.items() if p.requires_grad)
    seen["ignored"] = sorted(self.parameters_to_ignore)


torch.nn.parallel.DistributedDataParallel.__init__ = recording_init
result = loop.train(load_bundle(config_dir), events=EventWriter(None), control=Control(out / "control"),
                    preview_dir=out / "previews")
seen["steps"] = result.step
(out / f"ddp-{os.environ['RANK']}.json").write_text(json.dumps(seen))
"""


@pytest.mark.slow
def test_ddp_leaves_the_quantised_base_alone_and_syncs_the_adapter(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, images=4, max_train_steps=2, train_batch_size=1, model_type="lora",
                         lora_type="lycoris", base_model_precision="int8-quanto", quantize_via="cpu",
                         optimizer="adamw", mixed_precision="no")
    script = tmp_path / "quanto_ddp.py"
    script.write_text(SCRIPT)
    proc = torchrun_script(str(script), str(config), str(tmp_path))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"ddp-{rank}.json").read_text())
        assert seen["steps"] == 2
        assert seen["quantised"], "the base was not quantised"
        assert set(seen["quantised"]) <= set(seen["ignored"]), "DDP would broadcast quantised weights"
        assert seen["trained"] and not set(seen["trained"]) & set(seen["ignored"]), "the adapter must stay synced"


@pytest.mark.parametrize("precision", ["int8-quanto", "nf4-bnb"])
def test_every_quantised_layers_tensors_are_ignored_and_nothing_else(tiny_sana, precision):
    import torch
    from diffusers import SanaTransformer2DModel

    from tuner.engine import adapters
    from tuner.engine.quantize import ignore_in_ddp, quantize_model

    model = quantize_model(SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer"), precision,
                           device="cpu", via="cpu")
    adapters.add_lokr(model, {"apply_preset": {"target_module": ["Attention"]}})
    ignored = set(ignore_in_ddp(model))
    layer = "Linear4bit" if precision == "nf4-bnb" else "QLinear"
    quantised = {f"{n}.weight" for n, m in model.named_modules() if type(m).__name__ == layer}
    assert quantised and quantised <= ignored
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and not trained & ignored
    # The unquantised rest (norms, embedders kept in full precision) is left to DDP as before.
    assert "proj_out.weight" not in ignored and isinstance(model.proj_out, torch.nn.Linear)
