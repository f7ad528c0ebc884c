"""Benchmark: cache entries with and without compress_disk_cache, at real models' shapes.

For each entry kind: bytes on disk plain and compressed, the ratio (and, for comparison, gzip of
the plain file without byte planes), and median milliseconds to write one entry (atomically, as
the caches do) and to read it back (from the page cache: a cold disk adds its own time, less
for the smaller file). The data is synthetic: lossless compression of floats is bounded by the
noise in their low mantissa bits, which real latents have as much as Gaussian noise does, so
the i.i.d. rows are the worst case and the smooth rows (spatially correlated, as real latents
are) show how little correlation adds. Zeroed T5 padding (SD3 with t5_padding: zero) is where
compression pays most. Run: `make bench` or `python bench/cache_compress.py [--repeats N]`.
"""
from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save as safetensors_bytes  # noqa: E402

from tuner.engine.data import cache  # noqa: E402


def smooth(channels: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """Unit-variance noise blurred over ~5 latent pixels: neighbours correlate as in a real latent."""
    x = F.avg_pool2d(torch.randn(1, channels, side, side, generator=gen), 5, stride=1, padding=2)
    return (x / x.std())[0]


def entries(gen: torch.Generator) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """(label, tensors) of one cache entry each, as the engine stores them (latents fp32 on the CPU)."""
    sd3_text = torch.randn(77 + 154, 4096, generator=gen).bfloat16()
    sd3_text[77 + 20:] = 0  # a 20-token caption: T5 padding zeroed
    return [
        ("Sana latent 32×32×32 fp32, i.i.d.", {"latent": torch.randn(32, 32, 32, generator=gen)}),
        ("Sana latent 32×32×32 fp32, smooth", {"latent": smooth(32, 32, gen)}),
        ("SD3 latent 16×128×128 fp32, i.i.d.", {"latent": torch.randn(16, 128, 128, generator=gen)}),
        ("SD3 latent 16×128×128 fp32, smooth", {"latent": smooth(16, 128, gen)}),
        ("Sana text 300×2304 bf16 + mask", {"prompt_embeds": torch.randn(300, 2304, generator=gen).bfloat16(),
                                            "prompt_attention_mask": (torch.arange(300) < 40).long()}),
        ("SD3 text 231×4096 bf16, T5 pad zero", {"prompt_embeds": sd3_text,
                                                 "pooled_prompt_embeds": torch.randn(2048, generator=gen).bfloat16()}),
    ]


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(tensors: dict[str, torch.Tensor], folder: Path, repeats: int) -> dict:
    meta = {"key": "x" * 40, "path": "/data/images/some_image.png", "size": "1024x1024", "crop": "0,0,1024,1024"}
    row = {}
    for kind, suffix in (("plain", cache.PLAIN_SUFFIX), ("gz", cache.COMPRESSED_SUFFIX)):
        path = folder / f"entry{suffix}"
        row[f"{kind}_write"] = median_ms(lambda: cache.atomic_save(tensors, path, meta), repeats)
        # clone(): a plain read may map the file lazily; training copies every entry (torch.stack).
        row[f"{kind}_read"] = median_ms(lambda: [t.clone() for t in cache.load_tensors(path).values()], repeats)
        row[f"{kind}_bytes"] = path.stat().st_size
        back = cache.load_tensors(path)
        assert all(torch.equal(back[k], v) for k, v in tensors.items()), f"{kind} did not read back its tensors"
    plain = safetensors_bytes(tensors, metadata=meta)
    row["gzip_only_bytes"] = len(gzip.compress(plain, compresslevel=cache.GZIP_LEVEL, mtime=0))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--level", type=int, default=cache.GZIP_LEVEL, help="gzip level (the cache's own by default)")
    args = parser.parse_args()
    cache.GZIP_LEVEL = args.level
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print(f"gzip level {args.level}, median of {args.repeats} per entry, one thread, torch {torch.__version__}")
    print(f"{'entry':38} {'plain KiB':>10} {'gz KiB':>9} {'ratio':>6} {'gzip w/o planes':>15} "
          f"{'write ms plain/gz':>18} {'read ms plain/gz':>17}")
    with tempfile.TemporaryDirectory(prefix="tuner-bench-cache-") as tmp:
        for label, tensors in entries(gen):
            r = measure(tensors, Path(tmp), args.repeats)
            print(f"{label:38} {r['plain_bytes'] / 1024:10.0f} {r['gz_bytes'] / 1024:9.0f} "
                  f"{r['gz_bytes'] / r['plain_bytes']:6.3f} {r['gzip_only_bytes'] / r['plain_bytes']:15.3f} "
                  f"{r['plain_write']:8.1f} / {r['gz_write']:6.1f} {r['plain_read']:7.2f} / {r['gz_read']:6.2f}")


if __name__ == "__main__":
    main()
