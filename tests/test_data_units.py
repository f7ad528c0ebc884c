"""Discovery, captions, sizes, buckets and crops: the pure parts of the data pipeline."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from tuner.engine.data.buckets import choose_aspect, parse_aspect_buckets, size_for_aspect
from tuner.engine.data.captions import caption_from_filename, captions_for
from tuner.engine.data.crops import cover_size, crop_box, image_rng
from tuner.engine.data.discovery import find_images
from tuner.engine.data.errors import DataError
from tuner.engine.data.pixels import transform
from tuner.engine.data.sizing import SizeRule, measure

from data_fixtures import make_image


def test_discovery_recursive_sorted_skips_hidden_and_other_files(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deep/d.jpeg", ".hidden.png", ".cache/e.png",
                "notes.txt", "f.gif"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/c.webp", "sub/deep/d.jpeg"]


@pytest.mark.parametrize("name, caption", [
    ("a_red_circle.png", "a red circle"),
    ("a-blue-square_01.jpg", "a blue square"),
    ("green star (2).png", "green star"),
    ("photo of a dog - Copy.jpg", "photo of a dog"),
    ("cat_copy3.png", "cat"),
    ("1990s car.png", "1990s car"),
    ("0001.png", "0001"),
])
def test_filename_captions(name, caption):
    assert caption_from_filename(Path(name)) == caption


def test_textfile_and_instanceprompt_captions(tmp_path):
    img = make_image(tmp_path / "x.png", 8, 8)
    assert captions_for(img, "textfile", None, "ds") == []
    (tmp_path / "x.txt").write_text("first caption\n\n second caption \n")
    assert captions_for(img, "textfile", None, "ds") == ["first caption", "second caption"]
    assert captions_for(img, "instanceprompt", "sks dog", "ds") == ["sks dog"]
    with pytest.raises(DataError, match="instance_prompt"):
        captions_for(img, "instanceprompt", None, "ds")


def test_units_pixel_area_and_pixel_area():
    assert measure(640, 480, "pixel") == 480
    assert measure(2000, 1000, "area") == pytest.approx(2.0)
    assert measure(2048, 512, "pixel_area") == pytest.approx(1024)
    # pixel: shorter edge = resolution; area: megapixels; pixel_area: area of an edge².
    assert size_for_aspect(1.5, 512, "pixel", 32) == (768, 512)
    assert size_for_aspect(1.0, 1.0, "area", 32) == (992, 992)       # sqrt(10^6) = 1000 → 992
    assert size_for_aspect(1.0, 1024, "pixel_area", 32) == (1024, 1024)
    w, h = size_for_aspect(2.0, 1024, "pixel_area", 32)
    assert (w, h) == (1440, 736) and abs(w * h / 1024**2 - 1) < 0.02


def test_minimum_and_maximum_sizes_with_target_downsample():
    rule = SizeRule(512, "pixel", minimum_image_size=300, maximum_image_size=1536, target_downsample_size=1024)
    assert rule.too_small(400, 299) and not rule.too_small(400, 300)
    assert rule.downsampled(1200, 1000) == (1200, 1000)          # under the maximum: untouched
    assert rule.downsampled(4000, 2000) == (2048, 1024)          # shorter edge → 1024
    area = SizeRule(0.25, "area", minimum_image_size=0.1, maximum_image_size=1.0, target_downsample_size=0.5)
    assert area.too_small(300, 300) and not area.too_small(400, 300)
    w, h = area.downsampled(2000, 1000)
    assert abs(w * h / 1e6 - 0.5) < 0.01 and w == 2 * h
    edge = SizeRule(512, "pixel_area", minimum_image_size=256)
    assert edge.too_small(1000, 60) and not edge.too_small(512, 128)


def test_bucket_sides_are_multiples_of_alignment_for_mixed_aspects():
    rng = random.Random(0)
    for w, h in [(640, 480), (480, 640), (1000, 333), (777, 1001), (512, 512)]:
        aspect = choose_aspect(w, h, False, "square", [], rng, "ds")
        bw, bh = size_for_aspect(aspect, 512, "pixel", 64)
        assert bw % 64 == 0 and bh % 64 == 0 and min(bw, bh) == 512
        assert abs(bw / bh - w / h) < 0.25                  # preserve keeps roughly the aspect


def test_crop_aspects_square_preserve_closest_random():
    rng = random.Random(0)
    buckets = parse_aspect_buckets([0.75, 1.0, 1.5], "ds")
    assert choose_aspect(900, 600, True, "square", buckets, rng, "ds") == 1.0
    assert choose_aspect(900, 600, True, "preserve", buckets, rng, "ds") == 1.5
    assert choose_aspect(1000, 600, True, "closest", buckets, rng, "ds") == 1.5
    assert choose_aspect(600, 850, True, "closest", buckets, rng, "ds") == 0.75
    picks = {choose_aspect(600, 600, True, "random", buckets, random.Random(i), "ds") for i in range(40)}
    assert picks == {0.75, 1.0, 1.5}
    with pytest.raises(DataError, match="crop_aspect_buckets"):
        choose_aspect(600, 600, True, "closest", [], rng, "ds")


def test_crop_boxes_center_corner_and_seeded_random():
    assert cover_size(200, 100, 64, 64) == (128, 64)
    assert crop_box(128, 64, 64, 64, "center", random.Random(0)) == (32, 0, 96, 64)
    assert crop_box(128, 64, 64, 64, "corner", random.Random(0)) == (0, 0, 64, 64)
    boxes = {crop_box(128, 96, 64, 64, "random", image_rng(7, f"img{i}")) for i in range(20)}
    assert len(boxes) > 5                                     # different per image...
    again = crop_box(128, 96, 64, 64, "random", image_rng(7, "img3"))
    assert again == crop_box(128, 96, 64, 64, "random", image_rng(7, "img3"))  # ...stable per image


def test_transform_resizes_crops_and_scales_to_minus_one_one():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))
    t = transform(image, (200, 100), (128, 64), (0, 0, 64, 64))   # the left (red) half
    assert t.shape == (3, 64, 64)
    assert t.min() >= -1 and t.max() <= 1
    assert t[0].mean() > 0.9 and t[2].mean() < -0.9


def test_exif_rotated_photo_is_loaded_upright(tmp_path):
    from tuner.engine.data.pixels import load_rgb
    image = Image.new("RGB", (60, 40), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6                                          # "rotate 90° clockwise to view"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif)
    assert load_rgb(path).size == (40, 60)
