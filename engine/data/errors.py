"""The one error the data pipeline raises for problems a user can fix in their dataset or config."""
from __future__ import annotations


class DataError(Exception):
    """A dataset problem; the message names the dataset id or file and says what to change."""
