"""Writing a config back in the user's own spelling (engine/config/as_written.py)."""
from __future__ import annotations

from tuner.engine.config import TrainConfig
from tuner.engine.config.as_written import in_user_spelling
from tuner.engine.config.io import RENAMED


def test_the_users_keys_keep_their_place_spelling_and_text_and_new_keys_follow_their_style():
    theirs = {"--learning_rate": "1e-4", "--checkpointing_steps": "500", "--report_to": "none",
              "--disable_benchmark": "true", "--train_batch_size": "1", "--lerning_rat": "3"}
    written = {"learning_rate": 2e-4, "checkpoint_step_interval": 500, "train_batch_size": 1, "use_ema": True,
               "lr_warmup_steps": 3}
    out = in_user_spelling(written, {"disable_benchmark": "true"}, theirs, TrainConfig,
                           RENAMED, respelled={"lerning_rat": "lr_warmup_steps"})
    # A changed value is tuner's; an unchanged one keeps the user's text; an old name stays the user's;
    # the misspelling the user renamed is written in its place under its new name.
    assert out == {"--learning_rate": 2e-4, "--checkpointing_steps": "500", "--disable_benchmark": "true",
                   "--train_batch_size": "1", "--lr_warmup_steps": "3", "--use_ema": True}
    # report_to was in neither dict (the user removed it): left out.
    assert list(out) == ["--learning_rate", "--checkpointing_steps", "--disable_benchmark", "--train_batch_size",
                         "--lr_warmup_steps", "--use_ema"]


def test_a_file_without_dashes_gets_new_keys_without_them():
    out = in_user_spelling({"seed": 1, "use_ema": True}, {}, {"seed": 1}, TrainConfig, RENAMED)
    assert out == {"seed": 1, "use_ema": True}
