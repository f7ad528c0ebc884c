"""SanaFamily on the tiny model: encoding as SanaPipeline does it, training, sampling, export, errors."""
from __future__ import annotations

import time

import pytest
import torch

from tuner.engine.config import TrainConfig
from tuner.engine.models.base import family_class
from tuner.engine.models.common import ModelLoadError
from tuner.engine.models.sana import SanaFamily


def make_cfg(model, **overrides):
    return TrainConfig(model_family="sana", pretrained_model_name_or_path=str(model), mixed_precision="no",
                       **overrides)


@pytest.fixture(scope="module")
def family(tiny_sana):
    fam = SanaFamily(make_cfg(tiny_sana), torch.device("cpu"), torch.float32)
    fam.load_text_encoders()
    fam.load_vae()
    return fam


@pytest.fixture(scope="module")
def texts(family):
    return family.encode_prompts(["a red circle", "a blue square on a white background"])


def test_family_class_and_geometry(family):
    assert family_class("sana") is SanaFamily
    assert family.pixel_alignment == 2       # the tiny DC-AE halves, patch size 1
    assert family.latent_channels == 4


def test_works_with_the_real_train_config(tiny_sana):
    config = pytest.importorskip("tuner.engine.config")
    cfg = config.TrainConfig(model_family="sana", pretrained_model_name_or_path=str(tiny_sana), mixed_precision="no")
    fam = SanaFamily(cfg, torch.device("cpu"), torch.float32)
    assert fam.max_length == 300 and fam.pixel_alignment == 2


def test_prompts_encode_to_300_tokens_and_differ(family, texts):
    first, second = texts
    assert first["prompt_embeds"].shape == (300, 16)
    assert first["prompt_attention_mask"].shape == (300,)
    assert first["prompt_embeds"].device.type == "cpu"
    assert not torch.allclose(first["prompt_embeds"], second["prompt_embeds"])
    assert second["prompt_attention_mask"].sum() > first["prompt_attention_mask"].sum()


def test_embeddings_match_sana_pipeline_and_use_the_instruction(family, texts, tiny_sana):
    from diffusers import SanaPipeline

    pipe = SanaPipeline.from_pretrained(tiny_sana)
    embeds, mask, negative, negative_mask = pipe.encode_prompt("a red circle", do_classifier_free_guidance=True,
                                                               complex_human_instruction=family.instruction)
    torch.testing.assert_close(texts[0]["prompt_embeds"], embeds[0])
    torch.testing.assert_close(texts[0]["prompt_attention_mask"], mask[0])
    torch.testing.assert_close(family.empty_prompt()["prompt_embeds"], negative[0])

    plain = SanaFamily(make_cfg(tiny_sana, sana_complex_human_instruction=[]), torch.device("cpu"), torch.float32)
    without = plain.encode_prompts(["a red circle"])[0]
    assert without["prompt_embeds"].shape == (300, 16)
    assert not torch.allclose(without["prompt_embeds"], texts[0]["prompt_embeds"])


def test_empty_caption_is_the_unconditional_embedding(family):
    empty = family.encode_prompts([""])[0]
    torch.testing.assert_close(empty["prompt_embeds"], family.empty_prompt()["prompt_embeds"])
    batch = family.collate_text([empty, empty])
    assert batch["prompt_embeds"].shape == (2, 300, 16) and batch["prompt_attention_mask"].shape == (2, 300)


def test_pixels_become_scaled_latents(family):
    latents = family.encode_pixels(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert latents.shape == (2, 4, 32, 32)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu"
    raw = family.vae.encode(torch.zeros(1, 3, 64, 64) + 0.5).latent
    torch.testing.assert_close(family.encode_pixels(torch.zeros(1, 3, 64, 64) + 0.5), raw * family.scaling_factor)


def _step_inputs(family, texts):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 32, 32, generator=gen)
    return latents, torch.tensor([0.3, 0.8]), family.collate_text(texts)


def test_predict_shape_and_gradients_flow(family, texts):
    model = family.load_transformer()
    latents, sigmas, text = _step_inputs(family, texts)
    out = family.predict(model, latents, sigmas, text)
    assert out.shape == latents.shape
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _calls_per_block(family, texts, **cfg):
    fam = SanaFamily(make_cfg(family.source, **cfg), torch.device("cpu"), torch.float32)
    model = fam.load_transformer()
    calls = [0] * len(model.transformer_blocks)
    for index, block in enumerate(model.transformer_blocks):
        # a pre-hook: torch stops a recomputation once it has the tensors it needs, before forward hooks
        block.register_forward_pre_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    latents, sigmas, text = _step_inputs(family, texts)
    fam.predict(model, latents, sigmas, text).pow(2).mean().backward()
    return calls, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_checkpoint_interval_recomputes_every_second_block_with_same_gradients(family, texts):
    plain_calls, plain_grads = _calls_per_block(family, texts)
    all_calls, _ = _calls_per_block(family, texts, gradient_checkpointing=True)
    half_calls, half_grads = _calls_per_block(family, texts, gradient_checkpointing=True,
                                              gradient_checkpointing_interval=2)
    assert plain_calls == [1, 1]
    assert all_calls == [2, 2]        # every block runs again in the backward pass
    assert half_calls == [2, 1]       # only block 0 (every 2nd) is recomputed
    for name, grad in plain_grads.items():
        torch.testing.assert_close(half_grads[name], grad, msg=name)


def test_generate_calls_on_step_each_step_and_restores_train_mode(family, texts):
    model = family.load_transformer()
    seen = []
    images = family.generate(model, texts[0], family.empty_prompt(), width=64, height=32, steps=3,
                             guidance=4.5, seed=7, on_step=lambda k, n, latents: seen.append((k, n, latents.clone())))
    assert [(k, n) for k, n, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert seen[0][2].shape == (1, 4, 16, 32)
    assert images[0].size == (64, 32)
    assert model.training
    again = family.generate(model, texts[0], family.empty_prompt(), 64, 32, 3, 4.5, 7)
    assert list(again[0].getdata()) == list(images[0].getdata())
    assert family.decode_preview(seen[-1][2]).size == (64, 32)


def test_saved_pipeline_loads_in_diffusers_with_the_trained_weights(family, texts, tmp_path):
    from diffusers import SanaPipeline

    model = family.load_transformer()
    with torch.no_grad():
        model.proj_out.bias.add_(0.5)  # stands in for training: the export must carry it
    family.save_pipeline(model, tmp_path / "pipeline")
    pipe = SanaPipeline.from_pretrained(tmp_path / "pipeline")
    torch.testing.assert_close(pipe.transformer.proj_out.bias, model.proj_out.bias)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", height=64, width=64, num_inference_steps=2, use_resolution_binning=False).images[0]
    assert image.size == (64, 64)


@pytest.mark.parametrize("path", ["nobody/no-such-model", "/no/such/folder", "missing-folder"])
def test_bad_path_fails_fast_with_a_message_that_names_it(path, family):
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        SanaFamily(make_cfg(path), torch.device("cpu"), torch.float32)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert path in message
    assert "download" in message or "does not exist" in message


def test_separate_vae_folder_is_used(family, tiny_sana, tmp_path):
    family.vae.save_pretrained(tmp_path / "bare-vae")  # config.json at the top, no vae/ subfolder
    fam = SanaFamily(make_cfg(tiny_sana, pretrained_vae_model_name_or_path=str(tmp_path / "bare-vae")),
                     torch.device("cpu"), torch.float32)
    torch.testing.assert_close(fam.encode_pixels(torch.zeros(1, 3, 8, 8)), family.encode_pixels(torch.zeros(1, 3, 8, 8)))
    assert fam.fingerprint() != family.fingerprint()


def test_folder_without_model_says_what_is_missing(tmp_path, family):
    with pytest.raises(ModelLoadError, match="vae/ is missing"):
        SanaFamily(make_cfg(tmp_path), torch.device("cpu"), torch.float32)


def test_fingerprint_changes_with_model_and_encoding_settings(family, tiny_sana, tmp_path):
    from tuner.engine.tiny import build_tiny_sana

    same = SanaFamily(make_cfg(tiny_sana), torch.device("cpu"), torch.float32)
    longer = SanaFamily(make_cfg(tiny_sana, tokenizer_max_length=120), torch.device("cpu"), torch.float32)
    other = SanaFamily(make_cfg(build_tiny_sana(tmp_path / "seed1", seed=1)), torch.device("cpu"), torch.float32)
    assert same.fingerprint() == family.fingerprint()
    assert len({family.fingerprint(), longer.fingerprint(), other.fingerprint()}) == 3


def test_fingerprint_changes_when_vae_weights_change_in_place(family, tiny_sana, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sana, copy)
    before = SanaFamily(make_cfg(copy), torch.device("cpu"), torch.float32).fingerprint()
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, weights)
    assert SanaFamily(make_cfg(copy), torch.device("cpu"), torch.float32).fingerprint() != before
