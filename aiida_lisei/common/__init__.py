"""The lowest layer: seeds and small checks shared by every other layer (no AiiDA imports)."""
