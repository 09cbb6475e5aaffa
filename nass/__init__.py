"""nass: noise-robust speech separation on top of SpeechBrain.

Implements NASS (noise-aware separation with patch-wise contrastive learning),
unified speech enhancement + separation with gradient modulation, and GeCo /
Fast-GeCo generative correction, with LibriMix / WHAM! / custom-folder recipes.
"""

__version__ = "0.1.0"
