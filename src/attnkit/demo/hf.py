"""Quiet Hugging Face transformers while a demo step loads or saves a model."""

from __future__ import annotations

import contextlib

__all__ = ["quiet_transformers"]


@contextlib.contextmanager
def quiet_transformers():
    """No load reports or weight-loading bars from transformers inside the block."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
