"""What the first GPU run of a quantised preset depends on, exercised on the CPU with the tiny models:
the base reaches the device already quantised (never as a whole full-precision copy), nf4 on CUDA
loads through diffusers' own BitsAndBytesConfig with the same layers kept in full precision, the
input/output layers (the patch-embedding convolution too) stay unquantised, and a quanto kernel
that cannot be compiled is one error naming the key, the cause and the alternative."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tuner.engine import quantize
from tuner.engine.config import TrainConfig
from tuner.engine.models import common

LAYERS = (nn.Linear, nn.Conv2d)


def _plain_bytes(module: nn.Module) -> int:
    """Bytes of full-precision linear/conv weights in `module` (quantised layers are other types)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in module.modules()
               if type(m) in LAYERS and m.weight is not None and m.weight.is_floating_point())


@pytest.fixture
def moves(monkeypatch):
    """Every Module.to(device) call, as the full-precision layer bytes it carried (the real .to still runs)."""
    seen: list[tuple[str, int]] = []
    real_to = nn.Module.to

    def spying_to(self, *args, **kwargs):
        device, _, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            seen.append((type(self).__name__, _plain_bytes(self)))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", spying_to)
    return seen


def _sana(tiny, **overrides):
    from tuner.engine.models.sana import SanaFamily

    cfg = TrainConfig(pretrained_model_name_or_path=str(tiny), model_family="sana", model_type="lora",
                      lora_type="lycoris", **overrides)
    return SanaFamily(cfg, torch.device("cpu"), torch.bfloat16)


@pytest.mark.parametrize("precision", ["nf4-bnb", "int8-quanto"])
@pytest.mark.parametrize("via", ["cpu", "accelerator"])
def test_a_quantised_base_never_reaches_the_device_whole_in_full_precision(tiny_sana, moves, precision, via):
    from diffusers import SanaTransformer2DModel

    whole = _plain_bytes(SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer",
                                                                torch_dtype=torch.bfloat16))
    moves.clear()
    model = _sana(tiny_sana, base_model_precision=precision, quantize_via=via).load_transformer()
    kept = _plain_bytes(model)  # what stays full precision by design (embedders, proj_out; nf4: the convolutions)
    largest = max(m.weight.numel() * 2 for n, m in model.named_modules()
                  if type(m).__name__ in ("QLinear", "QConv2d", "Linear4bit"))
    assert any(name == "SanaTransformer2DModel" for name, _ in moves), "the model was never moved to the device"
    carried = max(b for _, b in moves)
    # quantize_via cpu: only quantised layers and the small rest travel; accelerator: one layer more at most
    assert carried <= kept + (largest if via == "accelerator" else 0) < whole, (moves, kept, whole)
    assert all(b <= kept for name, b in moves if name == "SanaTransformer2DModel")
    layer = model.transformer_blocks[0].attn1.to_q
    assert type(layer).__name__ == ("Linear4bit" if precision == "nf4-bnb" else "QLinear")
    assert not any(p.requires_grad for p in model.parameters())


def test_nf4_on_cuda_loads_through_diffusers_with_the_layers_our_swap_keeps(tiny_sana, monkeypatch):
    from accelerate import init_empty_weights
    from diffusers import SanaTransformer2DModel
    from diffusers.quantizers.bitsandbytes.utils import replace_with_bnb_linear

    # What load_denoiser asks diffusers for on a CUDA device (stopped before loading: no GPU here).
    asked: dict = {}

    class Stop(Exception):
        pass

    def capture(cls, source, subfolder, method="from_pretrained", **kwargs):
        if method == "load_config":
            return cls.load_config(source, subfolder=subfolder)
        asked.update(kwargs)
        raise Stop

    monkeypatch.setattr(common, "load_component", capture)
    cfg = TrainConfig(pretrained_model_name_or_path=str(tiny_sana), model_type="lora", lora_type="lycoris",
                      base_model_precision="nf4-bnb", quantize_via="accelerator")
    with pytest.raises(Stop):
        common.load_denoiser(SanaTransformer2DModel, str(tiny_sana), torch.bfloat16, torch.device("cuda", 1), cfg)
    config = asked["quantization_config"]
    assert asked["device_map"] == {"": torch.device("cuda", 1)} and asked["torch_dtype"] == torch.bfloat16
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.bfloat16

    # diffusers' own replacement with that config picks the layers our CPU swap picks.
    with init_empty_weights():
        empty = SanaTransformer2DModel.from_config(SanaTransformer2DModel.load_config(tiny_sana, subfolder="transformer"))
    replace_with_bnb_linear(empty, modules_to_not_convert=list(config.llm_int8_skip_modules), quantization_config=config)
    theirs = {n for n, m in empty.named_modules() if type(m).__name__ == "Linear4bit"}
    ours_model = SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer")
    quantize.quantize_model(ours_model, "nf4-bnb", device="cpu", via="cpu")
    ours = {n for n, m in ours_model.named_modules() if type(m).__name__ == "Linear4bit"}
    assert theirs == ours and "proj_out" not in ours and "transformer_blocks.0.attn1.to_q" in ours


@pytest.mark.parametrize("precision, via, device", [("nf4-bnb", "cpu", "cuda"), ("int8-quanto", "accelerator", "cuda"),
                                                    ("nf4-bnb", "accelerator", "cpu")])
def test_other_quantised_bases_load_on_the_cpu_first(precision, via, device):
    assert quantize.load_kwargs(precision, via, torch.device(device), torch.bfloat16, keep=["proj_out"]) == {}


def test_patch_embedding_stays_full_precision_and_nf4_leaves_the_convolutions(tiny_sana):
    from diffusers import SanaTransformer2DModel

    def quantised(precision: str) -> nn.Module:
        model = SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer")
        return quantize.quantize_model(model, precision, device="cpu", via="cpu")

    quanto = quantised("int8-quanto")
    assert type(quanto.patch_embed.proj) is nn.Conv2d, "the patch embedding must stay in full precision"
    assert type(quanto.transformer_blocks[0].ff.conv_inverted).__name__ == "QConv2d"
    nf4 = quantised("nf4-bnb")
    assert type(nf4.transformer_blocks[0].ff.conv_inverted) is nn.Conv2d  # bitsandbytes has no 4-bit conv
    assert nf4.transformer_blocks[0].ff.conv_inverted.weight.dtype == torch.float32


def test_a_quanto_kernel_that_cannot_be_compiled_names_the_key_cause_and_alternative(tiny_sana, monkeypatch, tmp_path):
    from diffusers import SanaTransformer2DModel
    from optimum.quanto.nn import QModuleMixin
    from torch.utils import cpp_extension

    source = tmp_path / "kernel.cu"
    source.write_text("")

    def freeze_building_the_extension(self):
        # What quanto does on CUDA for fp8 / int4: JIT-build its kernels, here on a machine without ninja.
        cpp_extension.load(name="quanto_cuda_missing", sources=[str(source)], build_directory=str(tmp_path))

    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    monkeypatch.setattr(QModuleMixin, "freeze", freeze_building_the_extension)
    model = SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer")
    with pytest.raises(quantize.QuantisationError) as caught:
        quantize.quantize_model(model, "fp8-quanto", device="cpu", via="cpu")
    message = str(caught.value)
    for words in ("base_model_precision", "fp8-quanto", "nvcc", "ninja", "int8-quanto", "nf4-bnb"):
        assert words in message, message


def test_other_errors_in_freeze_are_not_blamed_on_the_compiler(tiny_sana, monkeypatch):
    from diffusers import SanaTransformer2DModel
    from optimum.quanto.nn import QModuleMixin

    def broken(self):
        raise RuntimeError("something else")

    monkeypatch.setattr(QModuleMixin, "freeze", broken)
    model = SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer")
    with pytest.raises(RuntimeError, match="something else") as caught:
        quantize.quantize_model(model, "int4-quanto", device="cpu", via="cpu")
    assert not isinstance(caught.value, quantize.QuantisationError)


@pytest.mark.parametrize("fixture, family", [("tiny_sana", "sana"), ("tiny_sanavideo", "sanavideo")])
def test_the_estimate_counts_the_convolutions_nf4_leaves_in_bf16(request, fixture, family):
    from tuner.engine import families, vram

    folder = request.getfixturevalue(fixture)
    card = families.card(family)
    from diffusers import SanaTransformer2DModel, SanaVideoTransformer3DModel

    model = (SanaVideoTransformer3DModel if card.video else SanaTransformer2DModel).from_pretrained(
        folder, subfolder="transformer")
    convs = sum(m.weight.numel() for m in model.transformer_blocks.modules() if type(m) is nn.Conv2d)
    sized = vram.model_from_folder(folder, family)
    assert convs and sized["conv_params"] == convs
    # the published sizes use the same count from the architecture (checked here on the tiny one)
    assert vram.conv_params({k: v for k, v in sized.items() if k != "conv_params"}) == convs


def test_nf4_sana_weights_are_about_two_gb_not_under_one():
    from tuner.engine import vram

    lokr = {"model_family": "sana", "model_type": "lora", "lora_type": "lycoris"}
    nf4 = vram.estimate({**lokr, "base_model_precision": "nf4-bnb"})["parts"]["weights"]
    int4 = vram.estimate({**lokr, "base_model_precision": "int4-quanto"})["parts"]["weights"]
    assert 1.7 < nf4 < 2.1, nf4          # ~47 % of Sana 1.6B are convolutions, kept in bf16 by bitsandbytes
    assert int4 < 1.0                    # quanto quantises them too
    sd3 = {"model_family": "sd3", "model_type": "lora", "base_model_precision": "nf4-bnb"}
    assert vram.estimate(sd3)["parts"]["weights"] < 4.5  # an MMDiT has no convolution in its blocks
