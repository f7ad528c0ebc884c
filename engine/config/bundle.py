"""A loaded config folder: the typed settings, the datasets, the prompts and where they came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuner.engine.config.issues import Issue
from tuner.engine.config.models import DatasetConfig, TrainConfig


@dataclass
class ConfigBundle:
    """A loaded config folder: the run settings, the datasets, the prompt library and where they came from."""

    train: TrainConfig
    datasets: list[DatasetConfig]
    prompts: dict[str, str]
    config_path: Path
    databackend_path: Path | None
    prompts_path: Path | None
    warnings: list[Issue] = field(default_factory=list)
    base_dir: Path = field(default_factory=Path.cwd)

    def resolve(self, path_str: str | Path) -> Path:
        """A user path made absolute: as is, else under base_dir, else under the config's folder."""
        return resolve_path(path_str, self.base_dir, self.config_path.parent)

    @property
    def enabled_datasets(self) -> list[DatasetConfig]:
        """The image and video datasets the run trains on."""
        return [d for d in self.datasets if not d.disabled and d.dataset_type in ("image", "video")]

    @property
    def text_embeds_dataset(self) -> DatasetConfig | None:
        """The default text-embed cache dataset, if there is one."""
        embeds = [d for d in self.datasets if d.dataset_type == "text_embeds" and not d.disabled]
        return next((d for d in embeds if d.default), embeds[0] if embeds else None)


def resolve_path(path_str: str | Path, base_dir: Path, config_dir: Path) -> Path:
    """Resolve like SimpleTuner (relative to the working dir), falling back to the config's folder."""
    p = Path(path_str).expanduser()
    if p.is_absolute():
        return p
    first = Path(base_dir) / p
    if first.exists():
        return first.absolute()
    second = Path(config_dir) / p
    if second.exists():
        return second.absolute()
    return first.absolute()
