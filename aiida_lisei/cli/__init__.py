"""The ``aiida-lisei`` command line: set up profiles, computers, codes and engines, check them, launch the
work chains (``workflow launch``), move DP-GEN projects in and results out."""

from __future__ import annotations

import click
from aiida.cmdline.groups import VerdiCommandGroup
from aiida.cmdline.params import options, types

from .archive import cmd_import
from .check import cmd_check
from .dpgen import cmd_dpgen
from .export import cmd_export
from .report import cmd_report, cmd_status
from .setup import cmd_setup
from .workflows import cmd_workflow

__all__ = ('cmd_root',)


@click.group('aiida-lisei', cls=VerdiCommandGroup, context_settings={'help_option_names': ['-h', '--help']})
@options.PROFILE(type=types.ProfileParamType(load_profile=True), expose_value=False)
@click.version_option(package_name='aiida-lisei')
def cmd_root() -> None:
    """Set up and check aiida-lisei, launch its work chains (workflow launch); move DP-GEN projects in
    (dpgen import) and results out (export, import); look at a study (report, status)."""


cmd_root.add_command(cmd_setup)
cmd_root.add_command(cmd_check)
cmd_root.add_command(cmd_dpgen)
cmd_root.add_command(cmd_export)
cmd_root.add_command(cmd_report)
cmd_root.add_command(cmd_import)
cmd_root.add_command(cmd_status)
cmd_root.add_command(cmd_workflow)
