"""Models: specs (the registry, and any folder or Hub id via `auto`), FLOPs per input, loading the torch model, tokenizers/processors.

The public names of the former single module are re-exported here, so `from engines.models
import X` keeps working; the submodules hold the rest.
"""

from engines.models.auto import get_spec
from engines.models.loading import LoadedModel, hub_reachable, load_model
from engines.models.specs import (
    DEFAULT_MODEL,
    MODELS,
    POOLINGS,
    TASKS,
    TRUST_REMOTE_CODE,
    VISION_SPECIAL_TOKENS,
    VISION_TOKEN_IDS,
    WEIGHTS,
    ModelSpec,
)
from engines.models.tokenizers import WORDS, LoadedTokenizer, load_tokenizer

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "POOLINGS",
    "TASKS",
    "VISION_SPECIAL_TOKENS",
    "VISION_TOKEN_IDS",
    "TRUST_REMOTE_CODE",
    "WEIGHTS",
    "WORDS",
    "LoadedModel",
    "LoadedTokenizer",
    "ModelSpec",
    "get_spec",
    "hub_reachable",
    "load_model",
    "load_tokenizer",
]
