"""geo-synthesis: satellite-to-street GAN synthesis for cross-view geo-localisation.

This release contains only the package skeleton; the Toker et al. (CVPR'21) multitask model and
the SMDT (ICME'22) dual conditional GAN land in a later release (see CHANGELOG.md).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
