"""compress_disk_cache: smaller latent and text-embed caches that train exactly as the plain ones."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tuner.engine.data import DataError, prepare_data
from tuner.engine.data.cache import COMPRESSED_SUFFIX, PLAIN_SUFFIX, LatentCache, TextCache, load_tensors

from data_fixtures import CountingFamily, make_bundle, make_image
from engine_fixtures import demo_config, train_config


def entries(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))


def fingerprints(files: list[Path]) -> list[str]:
    """Each entry's tensors as one hash, sorted: equal lists mean the same tensors, bit for bit."""
    out = []
    for path in files:
        h = hashlib.sha256()
        for name, t in sorted(load_tensors(path).items()):
            h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
            h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        out.append(h.hexdigest())
    return sorted(out)


def test_a_compressed_run_writes_smaller_caches_and_trains_to_the_same_losses(tmp_path, tiny_sana):
    settings = dict(images=4, max_train_steps=3, train_batch_size=2, caption_dropout_probability=0.0)
    plain = demo_config(tmp_path / "plain", tiny_sana, **settings)
    packed = demo_config(tmp_path / "packed", tiny_sana, compress_disk_cache=True, **settings)
    expected = train_config(plain, tmp_path / "plain" / "job").losses
    got = train_config(packed, tmp_path / "packed" / "job").losses
    assert [s for s, _ in got] == [1, 2, 3]
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], rel=1e-6, abs=0)

    for kind in ("vae/shapes", "text"):
        plain_files = entries(tmp_path / "plain" / "cache" / kind, PLAIN_SUFFIX)
        packed_files = entries(tmp_path / "packed" / "cache" / kind, COMPRESSED_SUFFIX)
        assert plain_files and len(packed_files) == len(plain_files), kind
        assert not entries(tmp_path / "packed" / "cache" / kind, PLAIN_SUFFIX), f"{kind}: a plain entry was written"
        plain_bytes = sum(p.stat().st_size for p in plain_files)
        packed_bytes = sum(p.stat().st_size for p in packed_files)
        assert packed_bytes < 0.95 * plain_bytes, f"{kind}: {packed_bytes} compressed vs {plain_bytes} plain"
        assert fingerprints(packed_files) == fingerprints(plain_files), f"{kind}: tensors differ"


def test_flipping_the_setting_reuses_every_entry_and_writes_new_ones_the_new_way(tmp_path):
    folder = tmp_path / "a"
    for i, word in enumerate(("red", "green", "blue")):
        make_image(folder / f"{word}.png", 64, 64, seed=i)
    datasets = [{"id": "a", "instance_data_dir": "a"}]
    vae, text = tmp_path / "out/cache/vae/a", tmp_path / "out/cache/text"

    first = prepare_data(make_bundle(tmp_path, datasets), CountingFamily())
    assert first.encoded_latents == 3 and len(entries(vae, PLAIN_SUFFIX)) == 3
    reference = first.next_batch()

    flipped = prepare_data(make_bundle(tmp_path, datasets, compress_disk_cache=True), CountingFamily())
    assert (flipped.encoded_latents, flipped.encoded_prompts) == (0, 0)
    again = flipped.next_batch()
    assert again.paths == reference.paths
    assert torch.equal(again.latents, reference.latents) and torch.equal(again.text["emb"], reference.text["emb"])

    make_image(folder / "white.png", 64, 64, seed=3)
    grown = prepare_data(make_bundle(tmp_path, datasets, compress_disk_cache=True), CountingFamily())
    assert (grown.encoded_latents, grown.reused_latents, grown.encoded_prompts) == (1, 3, 1)
    assert (len(entries(vae, PLAIN_SUFFIX)), len(entries(vae, COMPRESSED_SUFFIX))) == (3, 1)
    assert (len(entries(text, PLAIN_SUFFIX)), len(entries(text, COMPRESSED_SUFFIX))) == (4, 1)

    back = prepare_data(make_bundle(tmp_path, datasets), CountingFamily())
    assert (back.encoded_latents, back.encoded_prompts) == (0, 0)
    seen = {p for _ in range(back.batches_per_epoch) for p in back.next_batch().paths}
    assert str(folder / "white.png") in seen                      # its compressed entry was read


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_a_compressed_entry_reads_back_bit_for_bit(tmp_path, dtype):
    torch.manual_seed(0)
    value = (torch.randn(7, 5) * 100).to(dtype)
    embedding = {"emb": value, "mask": torch.ones(7, dtype=torch.int64), "empty": torch.zeros(0, 3, dtype=dtype)}
    cache = TextCache(tmp_path, "fp", compress=True)
    cache.save("a caption", embedding)
    assert cache.path("a caption").name.endswith(COMPRESSED_SUFFIX)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path("a caption").name]   # no temp file left
    got = TextCache(tmp_path, "fp").load("a caption")                 # read with the setting off
    assert set(got) == set(embedding)
    for name, t in embedding.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_a_damaged_compressed_entry_names_the_file_and_the_fix(tmp_path):
    cache = LatentCache(tmp_path, compress=True)
    cache.save("k", torch.randn(4, 8, 8), {"path": "x.png"})
    path = cache.path("k")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="delete it") as err:
        cache.load("k")
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError):                            # missing stays missing, as before
        cache.load("never written")
