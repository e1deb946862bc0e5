"""Import shim: the python-backend models live in `engines.triton.backend`.

Repositories written before the move name this module in their one-line `model.py` files.
"""

from engines.triton.backend import EncoderModel, PostprocessModel, TokenizerModel

__all__ = ["EncoderModel", "PostprocessModel", "TokenizerModel"]
