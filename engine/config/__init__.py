"""The run's configuration, torch-free (the daemon and the TUI import it).

- models.py: the typed settings (TrainConfig, DatasetConfig, VideoConfig) and their derived values;
- bundle.py: a loaded config folder (ConfigBundle) and how its paths resolve;
- io.py: reading and checking a folder (load_bundle, check_bundle) or its contents in memory
  (check_data), every problem as an Issue;
- rules.py: the cross-field rules; names.py: SimpleTuner's option names;
- jobfiles.py: the one way a config folder becomes the files a job runs;
- check.py: `tuner check`.
"""
from tuner.engine.config.bundle import ConfigBundle, resolve_path
from tuner.engine.config.io import (
    check_bundle, check_data, load_bundle, parse_datasets, parse_prompts, parse_train_config, read_data,
)
from tuner.engine.config.issues import ConfigError, Issue, display
from tuner.engine.config.jobfiles import job_files, write_job_files
from tuner.engine.config.models import (
    QUANTISED_PRECISIONS, DatasetConfig, TrainConfig, VideoConfig, field_choices, field_info,
)
from tuner.engine.config.values import parse_resolutions

__all__ = [
    "Issue", "ConfigError", "TrainConfig", "DatasetConfig", "VideoConfig", "ConfigBundle",
    "load_bundle", "check_bundle", "check_data", "parse_train_config", "parse_datasets", "parse_prompts",
    "read_data", "job_files", "write_job_files", "field_info", "field_choices", "parse_resolutions",
    "resolve_path", "display", "QUANTISED_PRECISIONS",
]
