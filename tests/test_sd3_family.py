"""SD3Family and the tiny SD3: encoding as StableDiffusion3Pipeline does it, the padding and uncond options,
latents, training, sampling with skip-layer guidance, export, errors."""
from __future__ import annotations

import json
import time
import warnings

import pytest
import torch

from tuner.engine import cli
from tuner.engine.config import TrainConfig
from tuner.engine.models.base import family_class
from tuner.engine.models.common import ModelLoadError
from tuner.engine.models.sd3 import SD3Family
from tuner.engine.tiny import MARKER, TINY_SD3_VERSION, build_tiny_sd3

CLIP_TOKENS, T5_WIDTH, POOLED = 77, 48, 40


def make_cfg(model, **overrides):
    return TrainConfig(model_family="sd3", pretrained_model_name_or_path=str(model), mixed_precision="no",
                       **overrides)


def make_family(model, **overrides):
    return SD3Family(make_cfg(model, **overrides), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def family(tiny_sd3):
    fam = make_family(tiny_sd3)
    fam.load_text_encoders()
    fam.load_vae()
    return fam


@pytest.fixture(scope="module")
def pipe(tiny_sd3):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


PROMPTS = ["a red circle", "a blue square on a white background"]


@pytest.fixture(scope="module")
def texts(family):
    return family.encode_prompts(PROMPTS)


# --- the tiny model ------------------------------------------------------------------------------

def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tiny_sd3_is_deterministic_and_has_the_pipeline_layout(tmp_path, tiny_sd3):
    assert _files(build_tiny_sd3(tmp_path / "again")) == _files(tiny_sd3)
    other = build_tiny_sd3(tmp_path / "other", seed=1)
    name = "transformer/diffusion_pytorch_model.safetensors"
    assert _files(other)[name] != _files(tiny_sd3)[name]
    index = json.loads((tiny_sd3 / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert json.loads((tiny_sd3 / MARKER).read_text())["version"] == TINY_SD3_VERSION
    vae = json.loads((tiny_sd3 / "vae" / "config.json").read_text())
    assert vae["shift_factor"] == pytest.approx(0.0609) and vae["scaling_factor"] == pytest.approx(1.5035)


def test_tiny_sd3_loads_in_diffusers_and_generates_64px(pipe):
    assert pipe.tokenizer.tokenize("a red circle") == ["a</w>", "red</w>", "circle</w>"]
    assert pipe.tokenizer_3.tokenize("a red circle") == ["▁a", "▁red", "▁circle"]
    image = pipe("a red circle", height=64, width=64, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_tiny_vae_round_trip_keeps_the_image_at_half_resolution(pipe):
    import torch.nn.functional as F

    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mode()
        decoded = pipe.vae.decode(latents).sample
    assert latents.shape == (1, 4, 32, 32)
    pooled = F.avg_pool2d(pixels, 2)
    assert (latents[:, :3] - pooled).abs().max() < 1e-3            # latents are the colours themselves
    assert (decoded - F.interpolate(pooled, scale_factor=2, mode="nearest")).abs().max() < 1e-3


def test_cli_builds_tiny_sd3(tmp_path, capsys):
    assert cli.main(["tiny", "sd3", str(tmp_path / "cli")]) == 0
    assert "tiny sd3" in capsys.readouterr().out
    assert (tmp_path / "cli" / "text_encoder_3" / "config.json").is_file()


# --- geometry and encoding -----------------------------------------------------------------------

def test_family_class_and_geometry(family):
    assert family_class("sd3") is SD3Family
    assert family.pixel_alignment == 4      # the tiny VAE halves, patch size 2
    assert family.patch_area == 4 and family.latent_channels == 4
    assert family.pipeline_class.__name__ == "StableDiffusion3Pipeline"


def test_works_with_the_real_train_config(tiny_sd3):
    from tuner.engine.config import TrainConfig

    cfg = TrainConfig(model_family="sd3", pretrained_model_name_or_path=str(tiny_sd3), mixed_precision="no")
    fam = SD3Family(cfg, torch.device("cpu"), torch.float32)
    assert fam.max_length == 154 and fam.text_settings["t5_padding"] == "unmodified"


def test_embeddings_match_the_pipelines_encode_prompt(family, texts, pipe):
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPTS, None, None, do_classifier_free_guidance=True, max_sequence_length=154)
    assert texts[0]["prompt_embeds"].shape == (CLIP_TOKENS + 154, T5_WIDTH)
    assert texts[0]["pooled_prompt_embeds"].shape == (POOLED,)
    for i, text in enumerate(texts):
        torch.testing.assert_close(text["prompt_embeds"], embeds[i])
        torch.testing.assert_close(text["pooled_prompt_embeds"], pooled[i])
    # the default uncond behaviour (empty_string) is the pipeline's own negative prompt
    torch.testing.assert_close(family.empty_prompt()["prompt_embeds"], negative[0])
    torch.testing.assert_close(family.empty_prompt()["pooled_prompt_embeds"], negative_pooled[0])
    assert not torch.allclose(texts[0]["prompt_embeds"], texts[1]["prompt_embeds"])


def test_tokenizer_max_length_77(tiny_sd3, pipe):
    fam = make_family(tiny_sd3, tokenizer_max_length=77)
    text = fam.encode_prompts(["a red circle"])[0]
    embeds, _, _, _ = pipe.encode_prompt("a red circle", None, None, do_classifier_free_guidance=False,
                                         max_sequence_length=77)
    assert text["prompt_embeds"].shape == (77 + 77, T5_WIDTH)
    torch.testing.assert_close(text["prompt_embeds"], embeds[0])


def test_t5_padding_zero_zeroes_only_the_t5_padding(tiny_sd3, texts, pipe):
    fam = make_family(tiny_sd3, t5_padding="zero")
    zeroed = fam.encode_prompts(PROMPTS[:1])[0]["prompt_embeds"]
    plain = texts[0]["prompt_embeds"]
    used = len(pipe.tokenizer_3("a red circle").input_ids)      # 3 words + </s>
    t5 = CLIP_TOKENS
    torch.testing.assert_close(zeroed[:t5 + used], plain[:t5 + used])
    assert torch.all(zeroed[t5 + used:] == 0)
    assert plain[t5 + used:].abs().sum() > 0
    assert fam.fingerprint() != make_family(tiny_sd3).fingerprint()


@pytest.mark.parametrize("clip, t5", [("zero", "empty_string"), ("empty_string", "zero"), ("zero", "zero")])
def test_uncond_behaviours_zero_their_part_of_the_empty_prompt(tiny_sd3, family, clip, t5):
    fam = make_family(tiny_sd3, sd3_clip_uncond_behaviour=clip, sd3_t5_uncond_behaviour=t5)
    empty = fam.empty_prompt()
    default = family.empty_prompt()
    for found in (empty, fam.encode_prompts(["", "  "])[0]):   # caption dropout and empty captions agree
        torch.testing.assert_close(found["prompt_embeds"], empty["prompt_embeds"])
        embeds, pooled = found["prompt_embeds"], found["pooled_prompt_embeds"]
        clip_part, t5_part = embeds[:CLIP_TOKENS], embeds[CLIP_TOKENS:]
        if clip == "zero":
            assert torch.all(clip_part == 0) and torch.all(pooled == 0)
        else:
            torch.testing.assert_close(clip_part, default["prompt_embeds"][:CLIP_TOKENS])
            torch.testing.assert_close(pooled, default["pooled_prompt_embeds"])
        if t5 == "zero":
            assert torch.all(t5_part == 0)
        else:
            torch.testing.assert_close(t5_part, default["prompt_embeds"][CLIP_TOKENS:])
    # a real prompt is untouched by the uncond behaviours
    torch.testing.assert_close(fam.encode_prompts(["a red circle"])[0]["prompt_embeds"],
                               family.encode_prompts(["a red circle"])[0]["prompt_embeds"])
    assert fam.fingerprint() != family.fingerprint()


def test_empty_prompt_survives_unloading_the_text_encoders(tiny_sd3):
    fam = make_family(tiny_sd3, sd3_t5_uncond_behaviour="zero")
    fam.load_text_encoders()
    fam.unload_text_encoders()
    assert fam.text_parts is None
    assert torch.all(fam.empty_prompt()["prompt_embeds"][CLIP_TOKENS:] == 0)


# --- latents -------------------------------------------------------------------------------------

def test_pixels_become_shifted_and_scaled_latents(family):
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    latents = family.encode_pixels(pixels)
    assert latents.shape == (2, 4, 32, 32) and latents.dtype == torch.float32
    with torch.no_grad():
        raw = family.vae.encode(pixels).latent_dist.mode()
        torch.testing.assert_close(latents, (raw - 0.0609) * 1.5035)
        decoded = family.vae.decode(latents / 1.5035 + 0.0609).sample
        torch.testing.assert_close(decoded, family.vae.decode(raw).sample)


# --- training ------------------------------------------------------------------------------------

def _step_inputs(family, texts):
    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    return latents, torch.tensor([0.3, 0.8]), family.collate_text(texts)


def test_collate_and_predict_shape_and_gradients(family, texts):
    model = family.load_transformer()
    assert type(model).__name__ == "SD3Transformer2DModel" and model.training
    latents, sigmas, text = _step_inputs(family, texts)
    assert text["prompt_embeds"].shape == (2, CLIP_TOKENS + 154, T5_WIDTH)
    assert text["pooled_prompt_embeds"].shape == (2, POOLED)
    out = family.predict(model, latents, sigmas, text)
    assert out.shape == latents.shape
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # the timestep matters: sigma × 1000 reaches the model
    with torch.no_grad():
        other = family.predict(model, latents, torch.tensor([0.9, 0.1]), text)
    assert not torch.allclose(out.detach(), other)


def test_checkpointing_with_interval_keeps_the_gradients(tiny_sd3, family, texts):
    def grads(**cfg):
        fam = make_family(tiny_sd3, **cfg)
        model = fam.load_transformer()
        calls = [0] * len(model.transformer_blocks)
        for index, block in enumerate(model.transformer_blocks):
            block.register_forward_pre_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
        latents, sigmas, text = _step_inputs(family, texts)
        fam.predict(model, latents, sigmas, text).pow(2).mean().backward()
        return calls, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_calls, plain = grads()
    half_calls, half = grads(gradient_checkpointing=True, gradient_checkpointing_interval=2)
    assert plain_calls == [1, 1] and half_calls == [2, 1]
    for name, grad in plain.items():
        torch.testing.assert_close(half[name], grad, msg=name)


# --- sampling and export -------------------------------------------------------------------------

@pytest.mark.parametrize("skip", [None, [1]])
def test_generate_calls_on_step_each_step_and_restores_train_mode(tiny_sd3, texts, skip):
    fam = make_family(tiny_sd3, validation_guidance_skip_layers=skip, validation_guidance_skip_layers_start=0.0,
                      validation_guidance_skip_layers_stop=1.0, validation_guidance_skip_scale=2.8)
    model = fam.load_transformer()
    calls = [0, 0]
    for index, block in enumerate(model.transformer_blocks):
        block.register_forward_pre_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    seen = []
    images = fam.generate(model, texts[0], fam.empty_prompt(), width=64, height=32, steps=3, guidance=4.0, seed=7,
                          on_step=lambda k, n, latents: seen.append((k, n, latents.clone())))
    assert [(k, n) for k, n, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert seen[0][2].shape == (1, 4, 16, 32)
    assert images[0].size == (64, 32)
    assert model.training
    # one batched guided pass per step; skip-layer guidance adds a pass without block 1 at steps 1 and 2
    # (the pipeline applies it strictly between start × n and stop × n)
    assert calls == ([3, 3] if skip is None else [5, 3])
    again = fam.generate(model, texts[0], fam.empty_prompt(), 64, 32, 3, 4.0, 7)
    assert list(again[0].getdata()) == list(images[0].getdata())
    assert fam.decode_preview(seen[-1][2]).size == (64, 32)


def test_skip_layer_guidance_changes_the_image(tiny_sd3, family, texts):
    model = family.load_transformer()
    plain = family.generate(model, texts[0], family.empty_prompt(), 64, 64, 4, 4.0, 3)[0]
    fam = make_family(tiny_sd3, validation_guidance_skip_layers=[0], validation_guidance_skip_layers_start=0.0,
                      validation_guidance_skip_layers_stop=1.0, validation_guidance_skip_scale=2.8)
    skipped = fam.generate(model, texts[0], fam.empty_prompt(), 64, 64, 4, 4.0, 3)[0]
    assert list(plain.getdata()) != list(skipped.getdata())


def test_skip_layers_beyond_the_model_warn(tiny_sd3):
    with pytest.warns(UserWarning, match="validation_guidance_skip_layers"):
        make_family(tiny_sd3, validation_guidance_skip_layers=[7, 8, 9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_family(tiny_sd3, validation_guidance_skip_layers=[0, 1])


def test_saved_pipeline_loads_in_diffusers_with_the_trained_weights(family, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    model = family.load_transformer()
    with torch.no_grad():
        model.proj_out.bias.add_(0.5)  # stands in for training: the export must carry it
    family.save_pipeline(model, tmp_path / "pipeline")
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "pipeline")
    torch.testing.assert_close(pipe.transformer.proj_out.bias, model.proj_out.bias)
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a red circle", height=64, width=64, num_inference_steps=2).images[0].size == (64, 64)


# --- errors and cache keys -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["nobody/no-such-model", "/no/such/folder"])
def test_bad_path_fails_fast_with_a_message_that_names_it(path):
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        make_family(path)
    assert time.perf_counter() - started < 5
    assert path in str(error.value)
    assert "download" in str(error.value) or "does not exist" in str(error.value)


def test_folder_without_text_encoder_says_what_is_missing(tiny_sd3, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd3, copy)
    shutil.rmtree(copy / "text_encoder_3")
    fam = make_family(copy)
    with pytest.raises(ModelLoadError, match="text_encoder_3/ is missing"):
        fam.load_text_encoders()


def test_fingerprint_changes_with_model_and_length(family, tiny_sd3, tmp_path):
    assert make_family(tiny_sd3).fingerprint() == family.fingerprint()
    longer = make_family(tiny_sd3, tokenizer_max_length=77)
    other = make_family(build_tiny_sd3(tmp_path / "seed1", seed=1))
    assert len({family.fingerprint(), longer.fingerprint(), other.fingerprint()}) == 3


def test_bf16_weights_train_and_sample(tiny_sd3, texts):
    fam = SD3Family(make_cfg(tiny_sd3), torch.device("cpu"), torch.bfloat16)
    model = fam.load_transformer()
    assert next(model.parameters()).dtype == torch.bfloat16
    latents, sigmas, text = _step_inputs(fam, texts)
    assert fam.predict(model, latents, sigmas, text).dtype == torch.bfloat16
    # the pipeline's latents are bf16 while the VAE stays fp32: the decode must still work
    assert fam.generate(model, texts[0], texts[1], 64, 64, 2, 3.0, 0)[0].size == (64, 64)


def test_auto_shift_counts_patches_not_latent_pixels(tiny_sd3):
    from tuner.engine import flow

    latents = torch.zeros(1, 4, 64, 64)                 # 128 px: 64×64 latents, 2×2 patches
    auto = make_family(tiny_sd3, flow_schedule_auto_shift=True, flow_schedule_shift=3.0)
    assert auto.training_shift(latents) == pytest.approx(flow.auto_shift(32 * 32))
    assert make_family(tiny_sd3, flow_schedule_shift=3.0).training_shift(latents) == 3.0
