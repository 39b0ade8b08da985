"""mmr1: build, pretrain and reasoning-tune multimodal (image + audio + text) models the DeepSeek-R1 way."""

__version__ = "0.1.0"


def load(folder):
    """The question-answering pipeline of a checkpoint folder (see `mmr1.inference`)."""
    from mmr1.inference import load as _load

    return _load(folder)
