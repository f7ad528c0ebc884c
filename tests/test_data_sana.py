"""The data pipeline with the real tiny Sana: real VAE latents, real Gemma embeddings, real caches."""
from __future__ import annotations

import os
import time

import pytest
import torch

from tuner.engine.data import prepare_data

from data_fixtures import Recorder, make_bundle, make_image

sana = pytest.importorskip("tuner.engine.models.sana")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tuner.engine.tiny import build_tiny_sana
    return build_tiny_sana(tmp_path_factory.mktemp("tiny") / "sana")


def family(bundle):
    return sana.SanaFamily(bundle.train, torch.device("cpu"), torch.float32)


def sana_bundle(tmp_path, tiny, datasets, **train):
    return make_bundle(tmp_path, datasets, model_family="sana", pretrained_model_name_or_path=str(tiny),
                       **train)


WORDS = ["red circle", "blue square", "green star", "yellow ring", "white cross", "black dot",
         "pink stripe", "orange disc"]


def shapes(folder, n, size=64, seed=0):
    return [make_image(folder / f"a {WORDS[i].replace(' ', '_')}.png", size, size, seed=seed + i)
            for i in range(n)]


def test_second_prepare_encodes_nothing_and_a_changed_image_only_itself(tmp_path, tiny):
    paths = shapes(tmp_path / "a", 8)
    bundle = sana_bundle(tmp_path, tiny, [{"id": "a", "instance_data_dir": "a"}], train_batch_size=2)
    rec = Recorder()
    start = time.perf_counter()
    data = prepare_data(bundle, family(bundle), events=rec, extra_prompts=["a red circle on white"])
    first = time.perf_counter() - start
    assert (data.encoded_latents, data.encoded_prompts) == (8, 10)
    batch = data.next_batch()
    fam = family(bundle)
    assert batch.latents.shape == (2, fam.latent_channels, 64 // fam.pixel_alignment, 64 // fam.pixel_alignment)
    assert batch.latents.dtype == torch.float32 and batch.text["prompt_embeds"].shape[0] == 2

    fam = family(bundle)
    start = time.perf_counter()
    again = prepare_data(bundle, fam, extra_prompts=["a red circle on white"])
    second = time.perf_counter() - start
    assert (again.encoded_latents, again.encoded_prompts, again.reused_latents) == (0, 0, 8)
    assert fam.text_encoder is None and fam.vae is None          # nothing loaded when all is cached
    print(f"\nprepare 8 images at 64 px, tiny Sana: first {first:.2f}s, second {second:.2f}s")

    make_image(paths[3], 64, 64, seed=123)
    os.utime(paths[3], ns=(1, 1))
    changed = prepare_data(bundle, family(bundle))
    assert (changed.encoded_latents, changed.reused_latents, changed.encoded_prompts) == (1, 7, 0)
    cached = changed.text_for(["a red circle on white", ""])
    assert cached[1]["prompt_embeds"].shape == cached[0]["prompt_embeds"].shape


def test_changing_one_datasets_resolution_re_encodes_that_dataset_only(tmp_path, tiny):
    shapes(tmp_path / "a", 2)
    shapes(tmp_path / "b", 2, size=128, seed=10)
    ds = [{"id": "a", "instance_data_dir": "a"}, {"id": "b", "instance_data_dir": "b"}]
    prepare_data(sana_bundle(tmp_path, tiny, ds), family(sana_bundle(tmp_path, tiny, ds)))
    ds[1]["resolution"] = 128
    bundle = sana_bundle(tmp_path, tiny, ds)
    data = prepare_data(bundle, family(bundle))
    assert (data.encoded_latents, data.reused_latents, data.encoded_prompts) == (2, 2, 0)
    sides = {b.dataset_ids[0]: b.latents.shape[-1] for b in (data.next_batch() for _ in range(4))}
    assert sides["b"] == 2 * sides["a"]


def test_vae_cache_disable_gives_the_same_latents_without_files(tmp_path, tiny):
    shapes(tmp_path / "a", 2)
    ds = [{"id": "a", "instance_data_dir": "a", "crop": True, "crop_style": "random"}]
    cached = prepare_data(sana_bundle(tmp_path, tiny, ds, resolution=32), family(sana_bundle(tmp_path, tiny, ds)))
    bundle = sana_bundle(tmp_path / "fly", tiny, [{**ds[0], "instance_data_dir": str(tmp_path / "a")}],
                         resolution=32, vae_cache_disable=True)
    fly = prepare_data(bundle, family(bundle))
    assert fly.encoded_latents == 0
    assert not list((tmp_path / "fly/out/cache/vae").rglob("*.safetensors"))
    a, b = cached.next_batch(), fly.next_batch()
    assert a.paths == b.paths
    torch.testing.assert_close(a.latents, b.latents)
