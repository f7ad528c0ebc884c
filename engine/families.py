"""What each model family is, on one card per family: the one place config rules, the wizard, the
presets, the VRAM estimate, the adapters and the engine read it from. Torch-free.

Adding a family means one card here (`register`) plus one engine module implementing the
ModelFamily protocol (engine/models/base.py) that the card names.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Training types the wizard offers, as the config keys each one sets.
TRAINING_KEYS: dict[str, dict[str, str]] = {
    "full": {"model_type": "full"},
    "lora": {"model_type": "lora", "lora_type": "standard"},
    "lokr": {"model_type": "lora", "lora_type": "lycoris"},
}
TRAINING_LABELS = {"full": "full fine-tune", "lora": "LoRA", "lokr": "LyCORIS LoKr"}
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class ModelSize:
    """One published checkpoint of a family, with the numbers the VRAM estimate needs."""

    key: str                       # "sana-1.6b"
    model_id: str                  # the hub id it is published under
    match: tuple[str, ...]         # substrings of a hub id or folder name that mean this checkpoint
    params: float                  # denoiser parameters
    layers: int
    hidden: int
    attn_modules: int              # adapter-targeted D×D projections per block
    vae_factor: int                # VAE spatial compression
    patch: int
    text_encoders: tuple[float, ...]   # parameters of each text encoder
    vae_params: float
    text_tokens: int = 0           # text tokens in the denoiser's joint attention (SD3)
    dual_attention_layers: int = 0  # blocks with a second self-attention (SD3.5 Medium's MMDiT-X: 0-12)

    def as_dict(self, family: FamilyCard) -> dict[str, Any]:
        """The estimator's view: these numbers plus the family and whether it makes video."""
        return {"family": family.name, "params": self.params, "layers": self.layers, "hidden": self.hidden,
                "attn_modules": self.attn_modules, "dual_attention_layers": self.dual_attention_layers,
                "vae_factor": self.vae_factor, "patch": self.patch,
                "text_tokens": self.text_tokens, "text_encoders": list(self.text_encoders),
                "vae_params": self.vae_params, "video": family.video,
                "last_block_fewer_targets": family.last_block_fewer_targets}


@dataclass(frozen=True)
class FamilyCard:
    """Everything about a model family that is known before any weights load."""

    name: str                      # the `model_family` value
    label: str                     # how the wizard names it
    engine: str                    # "module:Class" implementing engine/models/base.py's protocol
    media: Literal["image", "video"]
    sizes: tuple[ModelSize, ...]   # published checkpoints; the first is the default model
    pixel_alignment: int           # image sides are multiples of VAE factor × patch
    training_types: tuple[str, ...]    # keys of TRAINING_KEYS, the wizard's default first
    adapter_targets: tuple[str, ...]   # module names LoRA wraps by default
    text_max_length: int           # text tokens per prompt unless tokenizer_max_length says otherwise
    temporal_compression: int = 1  # video VAEs: frames per latent frame (a clip has 1 + 4k frames for 4)
    frame_size: tuple[int, int] | None = None  # video: the checkpoint's training frame (width, height)
    # Convolutional feed-forward (Sana's GLUMBConv: D → 2h 1×1, 3×3 depthwise on 2h, h → D 1×1, h = mlp_ratio·D),
    # as (the published mlp_ratio, extra D² per block: Sana Video's 3×1 temporal conv D → D); None: linear.
    conv_feed_forward: tuple[float, int] | None = None
    last_block_fewer_targets: int = 0  # adapter targets the last block lacks (SD3: context_pre_only, no to_add_out)
    fixed_schedule: bool = False   # trains on the checkpoint's own flow shift (flow_schedule_* ignored)
    sageattention: bool = True     # whether SageAttention supports the family's head size
    vae_must_match_base: bool = False  # the base model's own VAE only (its latents are what it learned)
    note: str = ""                 # one line for the wizard's model step
    tiny: str | None = None        # "module:function" building a tiny model of it (`tuner tiny`, tests, demo)
    blocks: tuple[str, ...] = ()  # the repeated transformer block classes: FSDP2 shards, regional compile compiles each
    pipeline: str = ""             # the diffusers pipeline class its model folders name in model_index.json

    @property
    def default_model(self) -> str:
        """The checkpoint trained when pretrained_model_name_or_path is unset."""
        return self.sizes[0].model_id

    @property
    def video(self) -> bool:
        return self.media == "video"

    def allows(self, model_type: str, lora_type: str) -> bool:
        """Whether this family trains model_type (and, for adapters, lora_type)."""
        wanted = "full" if model_type == "full" else ("lokr" if lora_type == "lycoris" else "lora")
        return wanted in self.training_types

    def size_for(self, source: str | None) -> ModelSize | None:
        """The published checkpoint a hub id or folder name points at (unset: the default one)."""
        if not source:
            return self.sizes[0]
        low = source.lower().replace("_", "-")
        # The longest matching name wins: "sana-600m" is more telling than "sana".
        scored = [(max((len(n) for n in size.match if n in low), default=0), -i, size)
                  for i, size in enumerate(self.sizes)]
        best = max(scored, key=lambda t: t[:2])
        return best[2] if best[0] else None

    def engine_class(self) -> type:
        """The engine class for this family (imports torch: only the engine calls it)."""
        return _load(self.engine)

    def tiny_builder(self) -> Any:
        """The function that builds a tiny model of this family (imports torch), or None."""
        return _load(self.tiny) if self.tiny else None


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


_CARDS: dict[str, FamilyCard] = {}


def register(card: FamilyCard) -> FamilyCard:
    """Add (or replace) a family card; config validation, the wizard and the estimate see it at once."""
    _CARDS[card.name] = card
    return card


def unregister(name: str) -> None:
    _CARDS.pop(name, None)


def card(name: str) -> FamilyCard:
    """The card of `model_family: name`; KeyError names the known families."""
    try:
        return _CARDS[name]
    except KeyError:
        raise KeyError(f"unknown model_family {name!r}; known: {', '.join(names())}") from None


def mismatch(card_: FamilyCard, folder: str | Path) -> str | None:
    """Why `folder` cannot train as `card_`'s family: its model_index.json names another family's
    pipeline (None too for a hub id, an unreadable index or a pipeline no card names)."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    named = index.get("_class_name") if isinstance(index, dict) else None
    owner = next((c for c in _CARDS.values() if c.pipeline and c.pipeline == named), None)
    if owner is None or owner.name == card_.name:
        return None
    return (f"{folder} holds a {named} ({owner.label}, model_family {owner.name!r}), not a {card_.label} model; "
            f"set model_family to {owner.name!r}, or choose a {card_.label} model folder")


def names() -> list[str]:
    return list(_CARDS)


def cards() -> list[FamilyCard]:
    return list(_CARDS.values())


_GEMMA2 = (2.61e9,)
_SD3_TEXT = (0.123e9, 0.695e9, 4.76e9)

register(FamilyCard(
    name="sana", label="Sana", engine="tuner.engine.models.sana:SanaFamily", media="image",
    sizes=(
        ModelSize("sana-1.6b", "terminusresearch/sana-1.6b-1024px", ("sana",), 1.60e9, 20, 2240, 8, 32, 1,
                  _GEMMA2, 0.32e9),
        ModelSize("sana-600m", "Efficient-Large-Model/Sana_600M_1024px_diffusers", ("sana-600m", "600m"), 0.59e9, 28, 1152,
                  8, 32, 1, _GEMMA2, 0.32e9),
    ),
    pixel_alignment=32, training_types=("full", "lokr"), adapter_targets=ATTENTION_TARGETS,
    text_max_length=300, sageattention=False, conv_feed_forward=(2.5, 0), blocks=("SanaTransformerBlock",),
    pipeline="SanaPipeline",
    note="Sana trains full or as a LyCORIS LoKr adapter (plain LoRA is not supported).",
    tiny="tuner.engine.tiny.sana:build_tiny_sana",
))
register(FamilyCard(
    name="sanavideo", label="Sana Video", engine="tuner.engine.models.sanavideo:SanaVideoFamily", media="video",
    sizes=(
        ModelSize("sanavideo-2b", "Efficient-Large-Model/SANA-Video_2B_480p_diffusers", ("video",), 2.06e9, 20,
                  2240, 8, 8, 2, _GEMMA2, 0.127e9),
    ),
    # 480p at 832×480 and mlp_ratio 3.0: the checkpoint's transformer/config.json and model card
    pixel_alignment=32, temporal_compression=4, frame_size=(832, 480), conv_feed_forward=(3.0, 3),
    training_types=("full", "lokr", "lora"),
    adapter_targets=ATTENTION_TARGETS,
    text_max_length=300, fixed_schedule=True, sageattention=False, vae_must_match_base=True,
    blocks=("SanaVideoTransformerBlock",), pipeline="SanaVideoPipeline",
    note="Sana Video trains full-rank, or an adapter (LoKr, LoRA) on a quantised base for 16 GB cards.",
    tiny="tuner.engine.tiny.sanavideo:build_tiny_sanavideo",
))
register(FamilyCard(
    name="sd3", label="SD3 / 3.5", engine="tuner.engine.models.sd3:SD3Family", media="image",
    sizes=(
        ModelSize("sd3.5-large", "stabilityai/stable-diffusion-3.5-large", ("3.5-large",), 8.06e9, 38, 2432, 8,
                  8, 2, _SD3_TEXT, 0.084e9, text_tokens=77 + 154),
        # MMDiT-X: blocks 0-12 add a second self-attention (its transformer/config.json dual_attention_layers)
        ModelSize("sd3.5-medium", "stabilityai/stable-diffusion-3.5-medium", ("3.5-medium",), 2.24e9, 24, 1536,
                  8, 8, 2, _SD3_TEXT, 0.084e9, text_tokens=77 + 154, dual_attention_layers=13),
        ModelSize("sd3-medium", "stabilityai/stable-diffusion-3-medium-diffusers", ("3-medium",), 2.03e9, 24,
                  1536, 8, 8, 2, _SD3_TEXT, 0.084e9, text_tokens=77 + 154),
    ),
    # SD3's joint attention also projects the text stream (add_*_proj, to_add_out).
    pixel_alignment=16, training_types=("lora", "lokr", "full"),
    adapter_targets=ATTENTION_TARGETS + ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"),
    text_max_length=154, last_block_fewer_targets=1, blocks=("JointTransformerBlock",),
    pipeline="StableDiffusion3Pipeline",
    note="SD3 / 3.5 trains LoRA or LoKr adapters (or full-rank, for the largest cards).",
    tiny="tuner.engine.tiny.sd3:build_tiny_sd3",
))
