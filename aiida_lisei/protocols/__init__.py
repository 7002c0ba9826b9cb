"""YAML protocols (``demo``: minutes on 2 cores; ``paper``: the study's full settings)."""

from .utils import ProtocolMixin, recursive_merge

__all__ = ('ProtocolMixin', 'recursive_merge')
