"""What the VRAM estimate had missed on the GPU paths: a video's real frame size while caching, the
validation peak (classifier-free guidance's two halves, Wan's fp32 decode), CREPA's DINOv2 and its
decode, and SD3.5 Medium's second attention only in its dual-attention blocks."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tuner.engine import families, vram

GB = vram.GB
VIDEO_LORA = {"model_family": "sanavideo", "model_type": "lora", "lora_type": "lycoris", "mixed_precision": "bf16",
              "base_model_precision": "int8-quanto", "resolution": 480, "gradient_checkpointing": True,
              "num_frames": 9, "validation_resolution": "832x480", "validation_num_video_frames": 81}


def test_a_480p_clip_is_cached_at_its_832x480_frames_not_a_480_square():
    parts = vram.estimate({**VIDEO_LORA, "num_frames": 81})["parts"]
    one_chunk_of_frames = vram.VAE_BYTES_PER_PIXEL * 832 * 480 * 4
    assert parts["caching_vae_encode"] * GB >= one_chunk_of_frames
    assert parts["caching_vae_encode"] * GB < one_chunk_of_frames * 1.2  # plus the clip itself in fp32


def test_guidance_doubles_the_validation_activations_and_no_validation_has_no_validation_peak():
    guided = vram.estimate({**VIDEO_LORA, "validation_guidance": 6.0})["parts"]["validation_denoise"]
    unguided = vram.estimate({**VIDEO_LORA, "validation_guidance": 1.0})["parts"]["validation_denoise"]
    assert guided == pytest.approx(2 * unguided, rel=0.01)
    assert "validation_denoise" not in vram.estimate({**VIDEO_LORA, "validation_disable": True})["parts"]


def test_an_81_frame_validation_video_beside_9_frame_training_sets_the_peak():
    short = vram.estimate({**VIDEO_LORA, "validation_num_video_frames": 9})
    long = vram.estimate(VIDEO_LORA)
    assert "peak while validation" in long["assumptions"][-1]
    assert long["total_gb"] > short["total_gb"]
    # Wan decodes in fp32: the 81 decoded 832×480 frames alone are 0.39 GB
    assert long["parts"]["validation_decode"] * GB > 81 * 3 * 4 * 832 * 480


@pytest.mark.parametrize("encoder, params", [("dinov2_vitg14", 1.14e9), ("dinov2_vits14", 22.1e6)])
def test_crepa_counts_its_dinov2_and_its_decode(encoder, params):
    plain = vram.estimate(VIDEO_LORA)
    crepa = vram.estimate({**VIDEO_LORA, "crepa_enabled": True, "crepa_encoder": encoder})
    assert crepa["parts"]["crepa_encoder"] * GB == pytest.approx(params * 2, rel=0.01)  # bf16
    assert crepa["parts"]["crepa_targets"] > 0 and crepa["total_gb"] > plain["total_gb"]


def test_crepa_is_not_counted_for_an_image_family():
    assert "crepa_encoder" not in vram.estimate({"model_family": "sana", "crepa_enabled": True})["parts"]


def test_sd35_medium_adapter_counts_the_second_attention_in_its_13_dual_blocks_only():
    medium = families.card("sd3").size_for("stabilityai/stable-diffusion-3.5-medium").as_dict(families.card("sd3"))
    lora = {"model_type": "lora", "lora_type": "standard", "lora_rank": 16}
    assert vram._trainable(medium, lora) == (24 * 8 + 13 * 4 - 1) * 16 * 2 * 1536  # the last block has no to_add_out


def test_the_adapter_size_of_a_dual_attention_sd3_matches_what_add_lora_builds(tmp_path):
    from diffusers import SD3Transformer2DModel

    from tuner.engine import adapters
    from tuner.engine.tiny.sd3 import SD3_TRANSFORMER

    model = SD3Transformer2DModel(**{**SD3_TRANSFORMER, "num_layers": 3, "dual_attention_layers": (0, 1)})
    model.save_pretrained(tmp_path / "transformer")
    adapters.add_lora(model, SimpleNamespace(lora_rank=4, lora_alpha=None, lora_dropout=0.0,
                                             peft_lora_target_modules=None), "sd3")
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    estimated = vram._trainable(vram.model_from_folder(tmp_path, "sd3"),
                                {"model_type": "lora", "lora_type": "standard", "lora_rank": 4})
    assert estimated == built


def test_the_convolutional_feed_forward_is_read_from_the_family_card():
    assert families.card("sana").conv_feed_forward == (2.5, 0)
    assert families.card("sd3").conv_feed_forward is None
    sana = vram.default_model("sana")
    assert vram.conv_params(sana) / sana["params"] == pytest.approx(0.47, abs=0.02)


def test_the_estimate_names_each_peak_and_its_total_is_the_largest_one():
    """The benchmarks set the training peak beside the measured one; the total is the worst peak."""
    estimate = vram.estimate({**VIDEO_LORA, "num_frames": 81})
    peaks = estimate["peaks"]
    assert set(peaks) == {"training", "validation", "caching"}
    training_parts = {k: v for k, v in estimate["parts"].items() if not k.startswith(("validation_", "caching_"))}
    assert peaks["training"] == pytest.approx(sum(training_parts.values()), abs=0.01)
    worst = max(peaks.values())
    assert estimate["total_gb"] == pytest.approx(worst * (1 + vram.FRAGMENTATION) + vram.CONTEXT_GB, abs=0.01)
