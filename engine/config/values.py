"""Parsing of the value spellings SimpleTuner's command line accepts: lists, key=value pairs, sizes."""
from __future__ import annotations

import json
import re
from typing import Any


def split_list(value: Any) -> Any:
    """Accept a JSON list given as a string ("[7, 8, 9]") or a comma list ("7,8,9")."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "null"):
            return None
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def parse_scalar(text: str) -> Any:
    """Turn "0.9" / "8" / "true" from a "k=v" string into the number or boolean it spells."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_key_values(text: str) -> dict[str, Any]:
    """ "key=value,key=value" (optimizer_config's command-line spelling) → a dict of typed values."""
    pairs = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f'{part.strip()!r} is not key=value; write e.g. "weight_decay=0.01,eps=1e-8"')
        k, v = part.split("=", 1)
        pairs[k.strip()] = parse_scalar(v.strip())
    return pairs


def parse_resolutions(value: str | int) -> list[tuple[int, int]]:
    """Parse "1024", "1024x768" or "1024x1024,1280x768" into (width, height) pairs."""
    text = str(value).strip()
    if not text:
        raise ValueError("empty; give a size like 1024, 1024x768 or a comma list 1024x1024,1280x768")
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        m = re.fullmatch(r"(\d+)(?:\s*x\s*(\d+))?", part)
        if not m:
            raise ValueError(
                f"{part!r} is not a size; write WIDTHxHEIGHT (1024x768), one number for a square "
                "(1024), or a comma list (1024x1024,1280x768)")
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) else w
        if w < 1 or h < 1:
            raise ValueError(f"{part!r} has a zero side; sizes must be positive")
        sizes.append((w, h))
    return sizes
