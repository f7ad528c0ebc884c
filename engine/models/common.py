"""Helpers every model family shares: dtypes, loading a component with a clear error, checkpointing
every N-th block, fingerprints, and turning decoded tensors into images."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "no": torch.float32,
}


class ModelLoadError(RuntimeError):
    """A model component could not be loaded; the message says which path and what to do."""


def parse_dtype(name: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """'bf16', 'fp16', 'fp32', 'no' (and torch dtypes) → torch.dtype; None or 'default' → `default`."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "default":
        return default
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: expected one of {sorted(_DTYPES)}") from None


def hub_offline() -> bool:
    """Whether Hugging Face Hub access is switched off for this process."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_path(source: str) -> bool:
    """A string meant as a folder rather than a hub id ("owner/name")."""
    return (source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
            or Path(source).expanduser().exists())


def resolve_source(source: str) -> str:
    """A local folder as an absolute path, or a hub id unchanged; a missing folder raises ModelLoadError."""
    if looks_like_path(source):
        folder = Path(source).expanduser().resolve()
        if not folder.is_dir():
            raise ModelLoadError(
                f"model folder {source!r} does not exist ({folder}). Check "
                "pretrained_model_name_or_path / pretrained_vae_model_name_or_path in config.json, "
                "or give a Hugging Face repo id such as 'owner/name'.")
        return str(folder)
    return source


def load_component(cls: Any, source: str, subfolder: str | None, method: str = "from_pretrained",
                   **kwargs: Any) -> Any:
    """`cls.from_pretrained(source, subfolder=...)` (or `load_config`), turning a missing folder,
    file or offline cache miss into one ModelLoadError that names the path and the fix."""
    source = resolve_source(source)
    local = Path(source).is_dir()
    where = f"{source}/{subfolder}" if subfolder else source
    if local and subfolder and not (Path(source) / subfolder).is_dir():
        raise ModelLoadError(
            f"{source} is not a complete diffusers model: the folder {subfolder}/ is missing. "
            "Point pretrained_model_name_or_path at the folder that holds model_index.json.")
    load = getattr(cls, method)
    try:
        if subfolder:
            return load(source, subfolder=subfolder, **kwargs)
        return load(source, **kwargs)
    except (OSError, ValueError) as exc:  # hub misses are OSError; malformed repo ids ValueError
        if local:
            hint = "the folder exists but its files could not be read; rebuild or re-download it"
        elif hub_offline():
            hint = (f"HF_HUB_OFFLINE=1 is set and {source!r} is not in the local Hugging Face cache: "
                    f"download it first (`huggingface-cli download {source}`) or give a local folder "
                    f"(there is no folder {source!r} here either)")
        else:
            hint = ("check pretrained_model_name_or_path (a repo id 'owner/name' or a local folder), "
                    "your network, and `huggingface-cli login` for gated models")
        raise ModelLoadError(f"could not load {cls.__name__} from {where}: {hint}. ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


# Weight files up to this size are hashed by content (tiny models stay stable when rebuilt);
# larger ones by size and modification time, since hashing gigabytes per run is too slow.
_HASH_CONTENT_BYTES = 64 << 20


def source_fingerprint(source: str, files: Iterable[str], weight_folders: Iterable[str] = ()) -> str:
    """A digest of a model's identity: the resolved path or repo id, the given config files (from
    the folder, or the hub cache's snapshot, whose path carries the commit), and for local folders
    the weight files under `weight_folders`."""
    digest = hashlib.sha256()
    source = resolve_source(source)
    digest.update(source.encode())
    folder = Path(source) if Path(source).is_dir() else None
    for name in files:
        path = folder / name if folder else _cached_hub_file(source, name)
        if path is not None and path.is_file():
            digest.update(name.encode() if folder else str(path).encode())
            digest.update(path.read_bytes())
    for sub in weight_folders if folder else ():
        for path in sorted((folder / sub).glob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{sub}/{path.name}".encode())
                digest.update(path.read_bytes() if stat.st_size <= _HASH_CONTENT_BYTES
                              else f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link a file (weights are never edited in place, and this saves gigabytes), else copy it."""
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)
    return dst


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def json_digest(value: Any) -> str:
    """A stable digest of JSON-able settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_blocks(model: torch.nn.Module, blocks: Iterable[torch.nn.Module], interval: int | None) -> None:
    """Turn on diffusers' gradient checkpointing, recomputing only every `interval`-th block (None: all).

    diffusers routes every block through one `_gradient_checkpointing_func` when checkpointing is
    on; ours checkpoints the marked blocks and runs the others plainly, so `interval: 2` keeps the
    activations of half the blocks. The mark is an attribute on the block, so it survives
    deepcopy (EMA) and adapters wrapping the block's layers.
    """
    interval = max(1, int(interval or 1))
    for index, block in enumerate(blocks):
        block._tuner_checkpoint = index % interval == 0

    def run_block(block: torch.nn.Module, *args: Any) -> Any:
        if getattr(block, "_tuner_checkpoint", True):
            return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)
        return block(*args)

    model.enable_gradient_checkpointing(gradient_checkpointing_func=run_block)


def tensor_to_pil(images: torch.Tensor) -> list:
    """Decoded images (B, 3, H, W) in [-1, 1] → PIL images."""
    from PIL import Image

    arrays = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in arrays]


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's first floating-point parameter (adapters may add fp32 ones later)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP / accelerate / torch.compile wrapper."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def model_sources(cfg: TrainConfig) -> tuple[str, str, str | None]:
    """(model source, VAE source, VAE subfolder) from pretrained_model_name_or_path (else the family card's
    default) and pretrained_vae_model_name_or_path."""
    base = cfg.base_model()
    source = resolve_source(base)
    vae_source = resolve_source(cfg.pretrained_vae_model_name_or_path or base)
    # A separate VAE may be a bare model folder (config.json at its top) rather than a pipeline.
    bare_vae = vae_source != source and (Path(vae_source) / "config.json").is_file()
    return source, vae_source, None if bare_vae else "vae"


def load_frozen(cls: type, source: str, subfolder: str | None, dtype: torch.dtype,
                device: torch.device) -> torch.nn.Module:
    """A component that never trains (a VAE): loaded in `dtype`, frozen, in eval mode, on `device`."""
    module = load_component(cls, source, subfolder, torch_dtype=dtype)
    return module.requires_grad_(False).eval().to(device)


def load_denoiser(cls: type, source: str, dtype: torch.dtype, device: torch.device,
                  cfg: TrainConfig, empty: bool = False) -> torch.nn.Module:
    """The transformer to train: in `dtype`, train mode, with (interval) gradient checkpointing as configured.

    `empty` builds it from its config with weights on the meta device and nothing read or moved
    (buffers are computed as usual): FSDP's processes that receive their shards from the main one.

    A base that an adapter trains on (model_type lora) with a quantised base_model_precision
    arrives on `device` quantised: loaded quantised by diffusers (nf4 on CUDA, quantize_via:
    accelerator), or loaded on the CPU and quantised layer by layer before anything moves
    (quantize.quantize_model). The full unquantised model is never put on the device.
    """
    from tuner.engine import quantize

    precision = cfg.base_model_precision if cfg.model_type == "lora" else None
    kwargs: dict[str, Any] = {}
    if quantize.is_quantised(precision) and torch.device(device).type == "cuda":
        kwargs = quantize.load_kwargs(precision, cfg.quantize_via, device, dtype, keep=full_precision_layers(cls, source))
    if empty:
        from accelerate import init_empty_weights

        with init_empty_weights():
            model = cls.from_config(load_component(cls, source, "transformer", method="load_config")).to(dtype)
    else:
        model = load_component(cls, source, "transformer", torch_dtype=dtype, **kwargs)
    if cfg.gradient_checkpointing or (cfg.fsdp_enable and cfg.fsdp_activation_checkpointing):  # SimpleTuner's FSDP name
        checkpoint_blocks(model, model.transformer_blocks, cfg.gradient_checkpointing_interval)
    if quantize.is_quantised(precision):
        model = quantize.quantize_model(model, precision, device=device, via=cfg.quantize_via)
    return model.train() if empty else model.to(device).train()


def full_precision_layers(cls: type, source: str) -> list[str]:
    """The linear layers of `cls`'s transformer at `source` that quantisation leaves alone, found on
    an empty (meta-device) copy built from its config, so nothing is loaded."""
    from accelerate import init_empty_weights

    from tuner.engine.quantize import kept_full_precision

    config = load_component(cls, source, "transformer", method="load_config")
    with init_empty_weights():
        empty = cls.from_config(config)
    return kept_full_precision(empty)


def free_memory(device: torch.device) -> None:
    """Return memory of dropped modules now (after text encoders are unloaded)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """A temporary sibling of `folder` to fill; it replaces `folder` only when the block completes."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def base_folder(source: str, parts: Iterable[str]) -> Path:
    """The base model as a local folder (a hub id resolves to its cached snapshot of `parts`)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json"] + [f"{part}/*" for part in parts]
    return Path(snapshot_download(source, allow_patterns=patterns))


def save_pipeline_folder(folder: Path, source: str, copied_parts: Iterable[str], vae: torch.nn.Module,
                         model: torch.nn.Module) -> None:
    """A diffusers pipeline folder: the trained transformer, the VAE in use, the other parts linked from the base."""
    copied_parts = tuple(copied_parts)
    base = base_folder(source, copied_parts)
    with atomic_folder(folder) as tmp:
        shutil.copy2(base / "model_index.json", tmp / "model_index.json")
        for part in copied_parts:
            shutil.copytree(base / part, tmp / part, copy_function=link_or_copy)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        unwrap(model).save_pretrained(tmp / "transformer", safe_serialization=True)
