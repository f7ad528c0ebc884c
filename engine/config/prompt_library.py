"""The built-in validation prompt library (`validation_prompt_library: true`, the wizard's template).

Fifteen portrait and photo prompts in SimpleTuner's spirit: varied framing, light, setting and
medium, so a validation grid shows whether the subject holds up beyond the training images.
`<token>` stands for the subject; the engine fills it from the datasets' instance_prompt.
"""
from __future__ import annotations

from tuner.engine.config.bundle import ConfigBundle

TOKEN = "<token>"
# The subject used when no dataset names one (no instance_prompt): generic but still a portrait.
FALLBACK_SUBJECT = "a person"

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


def library_subject(bundle: ConfigBundle) -> str | None:
    """The subject the built-in library is about: the first enabled dataset's instance_prompt."""
    return next((d.instance_prompt.strip() for d in bundle.enabled_datasets
                 if d.instance_prompt and d.instance_prompt.strip()), None)


def validation_library(bundle: ConfigBundle) -> dict[str, str]:
    """Every prompt-library entry validation samples: the user's library, then (with
    validation_prompt_library) the built-in one; a nickname the user already has keeps the user's prompt."""
    library = dict(bundle.prompts)
    if bundle.train.validation_prompt_library:
        for nick, text in portrait_prompts(library_subject(bundle) or FALLBACK_SUBJECT).items():
            library.setdefault(nick, text)
    return library
