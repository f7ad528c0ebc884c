"""TREAD token routing (tread_config): in training a share of the image tokens skips a span of blocks and
rejoins in its own place; validation never routes; a routed run trains and resumes exactly."""
from __future__ import annotations

import math

import pytest
import torch

from engine_fixtures import demo_config, edit_config, events_of, train_config
from tuner.engine.train.tread import TokenRouter, routes_of

ROUTE = {"routes": [{"selection_ratio": 0.5, "start_layer_idx": 1, "end_layer_idx": -1}]}


def sana_inputs(model, batch=2):
    c = model.config
    return dict(hidden_states=torch.randn(batch, c.in_channels, 8, 8),
                encoder_hidden_states=torch.randn(batch, 5, c.caption_channels),
                encoder_attention_mask=torch.ones(batch, 5), timestep=torch.rand(batch) * 1000)


def sd3_inputs(model, batch=2):
    c = model.config
    return dict(hidden_states=torch.randn(batch, c.in_channels, 16, 16),
                encoder_hidden_states=torch.randn(batch, 7, c.joint_attention_dim),
                pooled_projections=torch.randn(batch, c.pooled_projection_dim), timestep=torch.rand(batch) * 1000)


def video_inputs(model, batch=2):
    c = model.config
    return dict(hidden_states=torch.randn(batch, c.in_channels, 2, 16, 16),   # 2 frames of an 8×8 token grid
                encoder_hidden_states=torch.randn(batch, 5, c.caption_channels),
                encoder_attention_mask=torch.ones(batch, 5), timestep=torch.rand(batch) * 1000)


def tokens_of(output):
    return output[1] if isinstance(output, tuple) else output


@pytest.fixture(params=["sana", "sd3", "sanavideo"])
def routed_model(request, tiny_sana, tiny_sd3, tiny_sanavideo):
    from diffusers import SanaTransformer2DModel, SanaVideoTransformer3DModel, SD3Transformer2DModel

    family = request.param
    cls, folder, inputs = {"sana": (SanaTransformer2DModel, tiny_sana, sana_inputs),
                           "sd3": (SD3Transformer2DModel, tiny_sd3, sd3_inputs),
                           "sanavideo": (SanaVideoTransformer3DModel, tiny_sanavideo, video_inputs)}[family]
    torch.manual_seed(0)
    return family, cls.from_pretrained(folder, subfolder="transformer"), inputs


def test_routed_tokens_skip_the_span_and_rejoin_in_their_own_place(routed_model):
    family, model, inputs = routed_model
    blocks = model.transformer_blocks
    last = len(blocks) - 1
    raw = {}   # the last block's own output, before the routed tokens rejoin (registered before the router)
    blocks[last].register_forward_hook(lambda m, a, out: raw.__setitem__("out", tokens_of(out)))
    router = TokenRouter(model, family, ROUTE, torch.Generator().manual_seed(0))
    seen, joined = {}, {}
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(
            lambda m, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw["hidden_states"]).shape[1]), with_kwargs=True)
    blocks[last].register_forward_hook(lambda m, a, out: joined.__setitem__("out", tokens_of(out)))

    model.train()
    out = model(**inputs(model), return_dict=False)[0]
    frames = 2 if family == "sanavideo" else 1
    full = 64 * frames   # an 8×8 token grid a frame: Sana's 8×8 latents in 1×1 patches, SD3's 16×16 in 2×2
    assert seen[0] == full and seen[last] < full   # block 0 is before the route, the last block in it
    kept = router.chosen[1]
    assert torch.equal(kept, kept.sort().values)
    if family == "sd3":    # any subset of a set of tokens: half of them
        assert seen[last] == len(kept) == full // 2
    else:                  # a grid of rows × columns of every frame: round(8 × √0.5) = 6 rows and 6 columns
        assert seen[last] == len(kept) == 36 * frames
        rows, cols = {int(i) // 8 % 8 for i in kept}, {int(i) % 8 for i in kept}
        assert len(rows) == len(cols) == 6 and len(kept) == len(rows) * len(cols) * frames
    gone = torch.ones(full, dtype=torch.bool)
    gone[kept] = False
    assert torch.equal(joined["out"][:, kept], raw["out"])                  # what went on comes back in place
    assert torch.equal(joined["out"][:, gone], router.held[1][:, gone])     # the rest rejoins as it left
    assert out.shape == inputs(model)["hidden_states"].shape
    out.float().pow(2).mean().backward()   # the routed forward trains every block
    assert all(p.grad is not None for p in blocks[last].parameters() if p.requires_grad)

    # Validation never routes: every block sees every token in eval mode or without gradients.
    for mode in ("eval", "no_grad"):
        seen.clear()
        model.train(mode != "eval")
        with torch.no_grad() if mode == "no_grad" else torch.enable_grad():
            model(**inputs(model), return_dict=False)
        assert set(seen.values()) == {full}, (mode, seen)


def test_route_indices_count_from_the_end_and_must_fit_the_model():
    [route] = routes_of({"routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": -2}]}, 20)
    assert (route.start, route.end) == (2, 18)
    with pytest.raises(ValueError, match=r"config.json: tread_config: route 1 spans blocks 3..30, which is not a "
                                         r"span of this model's 20 blocks"):
        routes_of({"routes": [{"selection_ratio": 0.5, "start_layer_idx": 3, "end_layer_idx": 30}]}, 20)
    with pytest.raises(ValueError, match="overlap"):
        routes_of({"routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": 8},
                              {"selection_ratio": 0.5, "start_layer_idx": 6, "end_layer_idx": 10}]}, 20)


def routed_run_resumes_exactly(tmp_path, make_config) -> str:
    """Train 4 routed steps straight, and again stopped at step 2 and resumed: the losses must agree.
    Returns the straight run's log."""
    straight = train_config(make_config(tmp_path / "a"), tmp_path / "a" / "job")
    assert len(straight.losses) == 4 and all(math.isfinite(loss) for _, loss in straight.losses)
    split = make_config(tmp_path / "b")
    assert train_config(split, tmp_path / "b" / "job", stop_after=2).stopped
    edit_config(split, resume_from_checkpoint="latest")
    resumed = train_config(split, tmp_path / "b" / "job")
    for (step, expected), (_, got) in zip(straight.losses[2:], resumed.losses, strict=True):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"step {step} differs after resume"
    return "\n".join(e["message"] for e in events_of(tmp_path / "a" / "job", "log"))


@pytest.mark.parametrize("family", ["sana", "sd3"])
def test_a_routed_run_trains_and_resumes_exactly(tmp_path, tiny_sana, tiny_sd3, family):
    model = tiny_sana if family == "sana" else tiny_sd3
    extra = dict(model_family="sd3", model_type="lora", lora_type="standard", lora_rank=4,
                 mixed_precision="no", resolution=64) if family == "sd3" else {}
    opts = dict(max_train_steps=4, tread_config=ROUTE, optimizer="adamw", gradient_checkpointing=True, **extra)
    logs = routed_run_resumes_exactly(tmp_path, lambda tmp: demo_config(tmp, model, **opts))
    assert "tread_config: routing 50% of the tokens past blocks 1..1" in logs


@pytest.mark.parametrize("i2v", [False, True], ids=["text-to-video", "image-to-video"])
def test_a_routed_sana_video_run_trains_and_resumes_exactly(tmp_path, tiny_sanavideo, i2v):
    """Sana Video routes rows and columns of every frame, with the rotary embedding (and, image-to-video,
    the per-token timesteps) narrowed to match."""
    from video_fixtures import video_config

    opts = dict(max_train_steps=4, tread_config=ROUTE, checkpoint_step_interval=2, gradient_checkpointing=True,
                video={"is_i2v": True} if i2v else None)
    logs = routed_run_resumes_exactly(tmp_path, lambda tmp: video_config(tmp, tiny_sanavideo, **opts))
    assert "tread_config: routing 50% of the tokens past blocks 1..1 (rows and columns)" in logs
