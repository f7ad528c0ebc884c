"""The portrait prompt template the validation step offers, and the `nickname = prompt` text format."""
from __future__ import annotations

from tuner.engine.config import parse_prompts
from tuner.engine.config.io import TOKEN

# Fifteen portrait and photo prompts in SimpleTuner's spirit: varied framing, light, setting and
# medium, so a validation grid shows whether the subject holds up beyond the training images.
PORTRAIT_TEMPLATE: dict[str, str] = {
    "studio_portrait": "a studio portrait of <token>, soft key light, neutral grey backdrop, 85mm lens",
    "headshot": "a close-up headshot of <token>, shallow depth of field, natural skin texture",
    "golden_hour": "a photo of <token> outdoors at golden hour, warm backlight, lens flare",
    "street": "a candid street photo of <token> walking through a busy city at dusk",
    "black_white": "a black and white portrait of <token>, high contrast, film grain",
    "profile": "a side profile portrait of <token> against a dark background, rim light",
    "cafe": "a photo of <token> sitting in a cosy cafe by the window, morning light",
    "full_body": "a full body photo of <token> standing in a field of tall grass, overcast sky",
    "rain": "a cinematic photo of <token> in the rain at night, neon reflections on wet pavement",
    "beach": "a photo of <token> on a beach at sunset, wind in the hair, wide angle",
    "oil_painting": "an oil painting portrait of <token> in the style of a renaissance master",
    "watercolour": "a watercolour illustration of <token>, loose brush strokes, white paper",
    "snow": "a photo of <token> in a snowy forest wearing a wool coat, soft falling snow",
    "office": "a professional corporate headshot of <token> in a modern office, smiling",
    "polaroid": "a faded polaroid photo of <token> at a summer party, flash photography",
}

def portrait_prompts(subject: str) -> dict[str, str]:
    """The template with `<token>` replaced by the subject (e.g. 'sks woman')."""
    return {nick: text.replace(TOKEN, subject.strip()) for nick, text in PORTRAIT_TEMPLATE.items()}


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
