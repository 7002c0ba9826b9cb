"""The ``aiida-lisei`` command line: set up profiles, computers, codes and engines, and check them."""

from __future__ import annotations

import click

from .archive import cmd_import
from .check import cmd_check
from .dpgen import cmd_dpgen
from .export import cmd_export
from .report import cmd_report, cmd_status
from .setup import cmd_setup

__all__ = ('cmd_root',)


@click.group('aiida-lisei', context_settings={'help_option_names': ['-h', '--help']})
@click.version_option(package_name='aiida-lisei')
def cmd_root() -> None:
    """Set up and check aiida-lisei; move DP-GEN projects in (dpgen import) and results out (export); look at
    a study (report, status)."""


cmd_root.add_command(cmd_setup)
cmd_root.add_command(cmd_check)
cmd_root.add_command(cmd_dpgen)
cmd_root.add_command(cmd_export)
cmd_root.add_command(cmd_report)
cmd_root.add_command(cmd_import)
cmd_root.add_command(cmd_status)
