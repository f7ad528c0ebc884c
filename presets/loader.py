"""Reading preset files: the TOML format, the shipped and user folders, and clear errors; torch-free."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PACKAGE = "tuner.presets"

# Every key a preset file may hold: anything else is a typo the user should hear about.
TOP_KEYS = {"preset", "config", "dataset"}
HEADER_KEYS = {"name", "description", "model_family", "model_type", "hardware", "notes"}
REQUIRED_HEADER_KEYS = ("name", "description", "model_family", "model_type", "hardware")
HARDWARE_KEYS = {"min_vram_gb", "gpus", "bf16_required", "estimated_vram_gb", "min_ram_gb"}
REQUIRED_HARDWARE_KEYS = ("min_vram_gb", "gpus", "bf16_required", "estimated_vram_gb")


class PresetError(ValueError):
    """A preset file that cannot be used, naming the file, the key at fault and the fix."""

    def __init__(self, file: str | Path, key: str | None, message: str):
        self.file, self.key, self.message = str(file), key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


@dataclass
class Preset:
    """One model family × hardware tier: a header saying what it needs and a sparse config overlay."""

    name: str
    description: str
    model_family: str
    model_type: str
    min_vram_gb: float
    gpus: int
    bf16_required: bool
    estimated_vram_gb: float
    notes: dict[str, str]
    config: dict[str, Any]
    dataset: dict[str, Any]
    path: Path
    min_ram_gb: float | None = None
    source: str = field(default="shipped")


def user_preset_dir() -> Path:
    """Where a user's own presets live; one there overrides a shipped preset of the same name."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("tuner")) / "presets"


def shipped_preset_paths() -> list[Path]:
    """The preset files installed with the package, sorted by name."""
    root = resources.files(PACKAGE)
    return sorted(Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(".toml"))


def _unknown(file: Path, table: str, keys: dict, allowed: set[str]) -> None:
    for key in keys:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"allowed here: {', '.join(sorted(allowed))}"
            raise PresetError(file, f"{table}{key}", f"unknown key; {hint}")


def _number(file: Path, key: str, value: Any, *, integer: bool = False) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < 0 or (isinstance(value, float) and not math.isfinite(value)):
        kind = "a whole number" if integer else "a number"
        raise PresetError(file, key, f"expected {kind} ≥ 0, got {value!r}")
    return value


def _string(file: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PresetError(file, key, f"expected a non-empty string, got {value!r}")
    return value


def _table(file: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise PresetError(file, key, f"expected a table ([{key}]), got {type(value).__name__}")
    return value


def _strip_dashes(file: Path, table: str, overlay: dict) -> dict:
    # SimpleTuner configs may spell keys '--learning_rate'; a preset made from one keeps working.
    out: dict[str, Any] = {}
    for key, value in overlay.items():
        clean = key[2:] if key.startswith("--") else key
        if clean in out:
            raise PresetError(file, f"{table}.{clean}", "given twice (with and without '--'); keep one")
        out[clean] = value
    return out


def parse_preset(data: dict[str, Any], path: Path, source: str = "file") -> Preset:
    """A Preset from a parsed TOML document, or a PresetError naming the first bad key."""
    _unknown(path, "", data, TOP_KEYS)
    if "preset" not in data:
        raise PresetError(path, "preset", "missing [preset] table (name, description, model_family, model_type, [preset.hardware])")
    header = _table(path, "preset", data["preset"])
    _unknown(path, "preset.", header, HEADER_KEYS)
    for key in REQUIRED_HEADER_KEYS:
        if key not in header:
            raise PresetError(path, f"preset.{key}", "missing; every preset needs it")
    name = _string(path, "preset.name", header["name"])
    if name != path.stem:
        raise PresetError(path, "preset.name", f"is '{name}' but the file is '{path.name}'; they must match (rename one)")
    hardware = _table(path, "preset.hardware", header["hardware"])
    _unknown(path, "preset.hardware.", hardware, HARDWARE_KEYS)
    for key in REQUIRED_HARDWARE_KEYS:
        if key not in hardware:
            raise PresetError(path, f"preset.hardware.{key}", "missing; the ranking needs it")
    if not isinstance(hardware["bf16_required"], bool):
        raise PresetError(path, "preset.hardware.bf16_required", f"expected true or false, got {hardware['bf16_required']!r}")
    notes = _table(path, "preset.notes", header.get("notes", {}))
    for key, value in notes.items():
        _string(path, f"preset.notes.{key}", value)
    config = _strip_dashes(path, "config", _table(path, "config", data.get("config", {})))
    dataset = _table(path, "dataset", data.get("dataset", {}))
    if "video" in dataset:
        _table(path, "dataset.video", dataset["video"])
    family = _string(path, "preset.model_family", header["model_family"])
    model_type = _string(path, "preset.model_type", header["model_type"])
    # The header is what the picker filters on; an overlay that says otherwise would mislead it.
    for key, expected in (("model_family", family), ("model_type", model_type)):
        if key in config and config[key] != expected:
            raise PresetError(path, f"config.{key}", f"is {config[key]!r} but [preset] says {expected!r}; make them agree")
    min_ram = hardware.get("min_ram_gb")
    return Preset(
        name=name,
        description=_string(path, "preset.description", header["description"]),
        model_family=family,
        model_type=model_type,
        min_vram_gb=float(_number(path, "preset.hardware.min_vram_gb", hardware["min_vram_gb"])),
        gpus=int(_number(path, "preset.hardware.gpus", hardware["gpus"], integer=True)),
        bf16_required=hardware["bf16_required"],
        estimated_vram_gb=float(_number(path, "preset.hardware.estimated_vram_gb", hardware["estimated_vram_gb"])),
        notes=dict(notes),
        config=config,
        dataset=dict(dataset),
        path=path,
        min_ram_gb=None if min_ram is None else float(_number(path, "preset.hardware.min_ram_gb", min_ram)),
        source=source,
    )


def read_preset(path: str | Path, source: str = "file") -> Preset:
    """Parse one preset file; TOML syntax errors and bad keys both come back as PresetError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PresetError(path, None, f"cannot read the file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(path, None, f"not valid TOML: {exc}") from exc
    return parse_preset(data, path, source)


def list_presets(
    family: str | None = None,
    extra_dirs: tuple | list = (),
    errors: list[PresetError] | None = None,
) -> list[Preset]:
    """Shipped presets, then the user's folder, then `extra_dirs`; a later one overrides by name.

    A malformed file raises PresetError, unless `errors` is a list: then it is appended there and
    skipped, so a picker can show every good preset and say which file is broken.
    """
    sources: list[tuple[str, list[Path]]] = [("shipped", shipped_preset_paths())]
    for label, folder in [("user", user_preset_dir()), *(("extra", Path(d)) for d in extra_dirs)]:
        if folder.is_dir():
            sources.append((label, sorted(folder.glob("*.toml"))))
    by_name: dict[str, Preset] = {}
    for label, paths in sources:
        for path in paths:
            try:
                preset = read_preset(path, label)
            except PresetError as exc:
                if errors is None:
                    raise
                errors.append(exc)
                continue
            by_name[preset.name] = preset
    presets = sorted(by_name.values(), key=lambda p: p.name)
    return [p for p in presets if family is None or p.model_family == family]


def load_preset(name_or_path: str | Path, extra_dirs: tuple | list = ()) -> Preset:
    """A preset by name (user presets first) or by path to a .toml file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise PresetError(candidate, None, "no such preset file")
        return read_preset(candidate)
    presets = {p.name: p for p in list_presets(extra_dirs=extra_dirs)}
    name = str(name_or_path)
    if name not in presets:
        near = difflib.get_close_matches(name, sorted(presets), n=1)
        hint = f"did you mean '{near[0]}'?" if near else "`tuner presets` lists them"
        raise PresetError(name, None, f"no preset of that name; {hint}")
    return presets[name]
