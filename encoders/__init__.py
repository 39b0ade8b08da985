"""Image, text and audio encoders; each returns an EncoderOutput (tokens, mask, pooled).

Names are imported on first use, so `mmr1.encoders.output` stays cheap for fusion (timm and
transformers take seconds to import).
"""

import importlib

_MODULE_OF = {
    "AudioEncoder": "audio",
    "EncoderOutput": "output",
    "TextEncoder": "text",
    "VisionEncoder": "vision",
    "masked_mean": "output",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
