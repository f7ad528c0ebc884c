"""The `nickname = prompt` text format of the validation step's prompt library (the template is the engine's)."""
from __future__ import annotations

from tuner.engine.config import parse_prompts
from tuner.engine.config.prompt_library import PORTRAIT_TEMPLATE, portrait_prompts

__all__ = ["PORTRAIT_TEMPLATE", "portrait_prompts", "to_text", "from_text"]


def to_text(prompts: dict[str, str]) -> str:
    """A prompt library as editable lines: `nickname = prompt`."""
    return "\n".join(f"{nick} = {text}" for nick, text in prompts.items())


def from_text(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse `nickname = prompt` lines; returns the library and one message per bad line."""
    prompts: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nick, sep, prompt = line.partition("=")
        nick, prompt = nick.strip(), prompt.strip()
        if not sep or not prompt:
            problems.append(f"line {number}: write it as `nickname = prompt`")
        elif nick in prompts:
            problems.append(f"line {number}: nickname {nick!r} is used twice")
        else:
            prompts[nick] = prompt
    # The engine's own rule for nicknames (they name files), so the wizard never accepts less or more.
    _, issues = parse_prompts(prompts)
    problems += [f"{i.key!r}: {i.message}" for i in issues if i.level == "error"]
    return prompts, problems
