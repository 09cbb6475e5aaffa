"""nass: noise-robust speech separation on top of SpeechBrain.

Implements NASS (noise-aware separation with patch-wise contrastive learning),
unified speech enhancement + separation with gradient modulation, and GeCo /
Fast-GeCo generative correction, with LibriMix / WHAM! / custom-folder recipes.
"""

__version__ = "0.1.0"

import logging as _logging


class _DropMessage(_logging.Filter):
    """Drops one known, irrelevant log message (exact text) of a third-party logger."""

    def __init__(self, message):
        super().__init__()
        self.message = message

    def filter(self, record):
        return record.getMessage() != self.message


# SpeechBrain 1.1.2 logs this at import of speechbrain.utils.train_logger (its optional
# image saver for ProgressSampleLogger, which nass never uses): every command printed it.
_logging.getLogger("speechbrain.utils.train_logger").addFilter(
    _DropMessage("torchvision is not available - cannot save figures")
)
