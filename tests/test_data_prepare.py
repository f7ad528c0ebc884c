"""prepare_data end to end with a counting encoder: caches, size checks, broken files, sampling."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from tuner.engine.data import DataError, prepare_data

from data_fixtures import CountingFamily, Recorder, make_bundle, make_image


def images(folder, n, size=(64, 64), seed=0, prefix="img"):
    return [make_image(folder / f"{prefix}_{chr(97 + i)}.png", *size, seed=seed + i) for i in range(n)]


def test_second_prepare_reuses_every_cache_entry(tmp_path):
    images(tmp_path / "a", 4)
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}])
    fam, rec = CountingFamily(), Recorder()
    data = prepare_data(bundle, fam, events=rec, extra_prompts=["a validation prompt"])
    assert (data.encoded_latents, data.encoded_prompts) == (4, 6)          # 4 captions + "" + extra
    assert fam.pixels_encoded == 4 and fam.empty_calls == 1
    files = list((tmp_path / "out/cache/vae/a").glob("*.safetensors"))
    assert len(files) == 4 and len(list((tmp_path / "out/cache/text").glob("*.safetensors"))) == 6
    cache_events = [e for e in rec.events if e["type"] == "cache" and e["kind"] == "latents"]
    assert cache_events[-1]["done"] == cache_events[-1]["total"] == 4
    assert any("found 4 images" in m and "encoded 4" in m for m in rec.logs("info"))
    fam2 = CountingFamily()
    again = prepare_data(bundle, fam2, extra_prompts=["a validation prompt"])
    assert (again.encoded_latents, again.encoded_prompts) == (0, 0)
    assert (again.reused_latents, again.reused_prompts) == (4, 6)
    assert fam2.pixels_encoded == 0 and fam2.prompts_encoded == []
    assert again.text_for(["a validation prompt"])[0]["emb"][0, 0] == len("a validation prompt")
    assert again.text_for([""])[0]["emb"].abs().sum() == 0
    with pytest.raises(DataError, match="extra_prompts"):
        again.text_for(["never cached"])


def test_changed_image_model_or_resolution_invalidates_only_its_entries(tmp_path):
    paths = images(tmp_path / "a", 3)
    images(tmp_path / "b", 2, seed=10, prefix="pic")
    ds = [{"id": "a", "instance_data_dir": "a"}, {"id": "b", "instance_data_dir": "b"}]
    prepare_data(make_bundle(tmp_path, ds), CountingFamily())
    make_image(paths[1], 64, 64, seed=99)                      # new content
    os.utime(paths[1], ns=(1, 1))                              # and surely a different mtime
    data = prepare_data(make_bundle(tmp_path, ds), CountingFamily())
    assert (data.encoded_latents, data.reused_latents, data.encoded_prompts) == (1, 4, 0)
    ds[1]["resolution"] = 32
    data = prepare_data(make_bundle(tmp_path, ds), CountingFamily())
    assert (data.encoded_latents, data.reused_latents) == (2, 3)
    data = prepare_data(make_bundle(tmp_path, ds), CountingFamily(version="2"))
    assert (data.encoded_latents, data.encoded_prompts) == (5, 6)


def test_too_small_dataset_names_the_repeats_that_fix_it(tmp_path):
    images(tmp_path / "a", 3)
    bundle = make_bundle(tmp_path, [{"id": "tiny-set", "instance_data_dir": "a"}],
                         train_batch_size=2, gradient_accumulation_steps=2)
    fam = CountingFamily()
    with pytest.raises(DataError) as err:
        prepare_data(bundle, fam, num_processes=2)
    message = str(err.value)
    assert "tiny-set" in message and "3 usable" in message and "8" in message
    assert '"repeats": 2' in message                          # 3 × 3 = 9 ≥ 8
    assert fam.pixels_encoded == 0                            # refused before any encoding
    ok = make_bundle(tmp_path, [{"id": "tiny-set", "instance_data_dir": "a", "repeats": 2}],
                     train_batch_size=2, gradient_accumulation_steps=2)
    assert prepare_data(ok, CountingFamily(), num_processes=2).batches_per_epoch == 2


def test_repeats_show_each_image_n_plus_one_times_per_epoch(tmp_path):
    images(tmp_path / "a", 4)
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a", "repeats": 2}])
    data = prepare_data(bundle, CountingFamily())
    assert data.batches_per_epoch == 12
    seen = Counter(p for _ in range(12) for p in data.next_batch().paths)
    assert set(seen.values()) == {3} and len(seen) == 4 and data.epoch == 1
    data.next_batch()
    assert data.epoch == 2


def test_no_images_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images .*empty"):
        prepare_data(make_bundle(tmp_path, [{"id": "e", "instance_data_dir": "empty"}]), CountingFamily())


@pytest.mark.parametrize("delete", [False, True])
def test_broken_images_are_reported_and_deleted_only_with_the_flag(tmp_path, delete):
    good = images(tmp_path / "a", 2)
    not_image = tmp_path / "a" / "notes.png"
    not_image.write_text("not an image")
    truncated = make_image(tmp_path / "a" / "cut.jpg", 64, 64, seed=5)
    truncated.write_bytes(truncated.read_bytes()[:300])
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}], delete_problematic_images=delete)
    rec = Recorder()
    data = prepare_data(bundle, CountingFamily(), events=rec)
    warnings = rec.logs("warning")
    assert any(str(not_image) in w for w in warnings) and any(str(truncated) in w for w in warnings)
    assert data.encoded_latents == 2 and sorted(data.samples[i].path for i in range(2)) == good
    assert any("skipped 2 (2 broken image)" in m for m in rec.logs("info"))
    assert not_image.exists() != delete and truncated.exists() != delete


def test_size_filters_and_mixed_aspect_buckets(tmp_path):
    make_image(tmp_path / "a/small.png", 40, 40)                 # under minimum 48: skipped
    make_image(tmp_path / "a/wide.png", 150, 100, seed=1)
    make_image(tmp_path / "a/wide2.png", 96, 64, seed=2)
    make_image(tmp_path / "a/tall.png", 100, 150, seed=3)
    make_image(tmp_path / "a/big.png", 400, 400, seed=4)         # over maximum: downsampled first
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a", "minimum_image_size": 48,
                                     "maximum_image_size": 200, "target_downsample_size": 128}])
    rec = Recorder()
    data = prepare_data(bundle, CountingFamily(), events=rec)
    by_name = {s.path.name: s for s in data.samples}
    assert "small.png" not in by_name
    assert by_name["wide.png"].bucket == by_name["wide2.png"].bucket == (96, 64)
    assert by_name["tall.png"].bucket == (64, 96)
    assert by_name["big.png"].downsampled == (128, 128) and by_name["big.png"].bucket == (64, 64)
    assert any("smaller than minimum_image_size 48" in m for m in rec.logs("info"))
    for _ in range(data.batches_per_epoch):
        batch = data.next_batch()
        assert batch.latents.shape[-2:] == (by_name[os.path.basename(batch.paths[0])].bucket[1] // 8,
                                            by_name[os.path.basename(batch.paths[0])].bucket[0] // 8)


def test_closest_crop_groups_images_into_listed_buckets(tmp_path):
    for i, size in enumerate([(150, 100), (100, 150), (128, 100), (100, 100), (90, 140)]):
        make_image(tmp_path / f"a/i{i}.png", *size, seed=i)
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a", "crop": True,
                                     "crop_aspect": "closest", "crop_aspect_buckets": [0.5, 1.0, 1.5]}],
                         train_batch_size=1)
    data = prepare_data(bundle, CountingFamily())
    assert {s.bucket for s in data.samples} == {(96, 64), (64, 128), (64, 64)}


def test_buckets_dropping_leftovers_are_reported(tmp_path):
    images(tmp_path / "a", 3, size=(64, 64))
    images(tmp_path / "a", 1, size=(96, 64), prefix="wide")
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}], train_batch_size=2)
    rec = Recorder()
    data = prepare_data(bundle, CountingFamily(), events=rec)
    assert data.batches_per_epoch == 1
    assert any("2 samples per epoch dropped" in m for m in rec.logs("info"))


def test_vae_cache_disable_encodes_on_the_fly_without_latent_files(tmp_path):
    images(tmp_path / "a", 2)
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}], vae_cache_disable=True)
    fam = CountingFamily()
    data = prepare_data(bundle, fam)
    assert fam.pixels_encoded == 0 and data.encoded_latents == 0
    assert not list((tmp_path / "out/cache/vae").rglob("*.safetensors"))
    batch = data.next_batch()
    assert fam.pixels_encoded == 1 and batch.latents.shape == (1, 4, 8, 8)


def test_manifest_is_json_and_state_dict_is_json(tmp_path):
    images(tmp_path / "a", 2)
    data = prepare_data(make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}]), CountingFamily())
    manifest = json.loads((tmp_path / "out/cache/vae/a/images.json").read_text())
    assert set(manifest["images"]) == {"img_a.png", "img_b.png"}
    json.dumps(data.state_dict())


def test_unchanged_images_are_not_decoded_again_to_learn_their_size(tmp_path, monkeypatch):
    images(tmp_path / "a", 3)
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}])
    prepare_data(bundle, CountingFamily())
    import tuner.engine.data.scan as scan
    opened = []
    real = scan.load_rgb
    monkeypatch.setattr(scan, "load_rgb", lambda p: opened.append(p) or real(p))
    make_image(tmp_path / "a/img_d.png", 64, 64, seed=50)
    prepare_data(bundle, CountingFamily())
    assert [p.name for p in opened] == ["img_d.png"]


def test_other_processes_wait_for_the_main_scan_and_decode_nothing(tmp_path, monkeypatch):
    images(tmp_path / "a", 2)
    bundle = make_bundle(tmp_path, [{"id": "a", "instance_data_dir": "a"}])
    import tuner.engine.data.scan as scan
    opened = []
    real = scan.load_rgb
    monkeypatch.setattr(scan, "load_rgb", lambda p: opened.append(p) or real(p))
    prepare_data(bundle, CountingFamily(), num_processes=1)                 # the main process's part
    opened.clear()
    fam = CountingFamily()
    other = prepare_data(bundle, fam, process_index=0, is_main=False)
    assert opened == [] and fam.pixels_encoded == 0 and other.reused_latents == 2


def test_error_in_the_main_scan_still_releases_the_other_processes(tmp_path):
    waits = []
    bundle = make_bundle(tmp_path, [{"id": "gone", "instance_data_dir": "missing"}])
    with pytest.raises(DataError, match="gone.*missing"):
        prepare_data(bundle, CountingFamily(), wait_for_main=lambda: waits.append(1))
    assert waits == [1]
