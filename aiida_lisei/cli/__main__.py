"""``python -m aiida_lisei.cli``: the same as the ``aiida-lisei`` console script."""

from aiida_lisei.cli import cmd_root

cmd_root()
