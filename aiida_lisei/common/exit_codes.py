"""The exit-code table of the package: what each range of numbers means, and whether it invalidates the cache.

One table for every process (``docs/developer.md``; ``docs/exit_codes.md`` is generated from the specs and
a test checks every entry point against this table). The cache rule of the CalcJobs follows the range, as in
aiida-quantumespresso: outputs missing, unreadable or incomplete, an error the engine reported and a
walltime stop say nothing about the inputs, so such a node is never reused from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ('EXIT_CODE_RANGES', 'ExitCodeRange', 'exit_code_range', 'invalidates_cache')


@dataclass(frozen=True)
class ExitCodeRange:
    """Statuses ``low`` to ``high`` (inclusive): their meaning, who uses them, and the cache rule."""

    low: int
    high: int
    meaning: str
    calculations: bool  # CalcJobs use the range
    workchains: bool  # work chains use the range for failures of their own
    invalidates_cache: bool


#: The table, lowest first. aiida-core owns 0-299 (and the codes of its base classes, e.g. 401 and 402 of
#: ``BaseRestartWorkChain``); our processes use 300-799.
EXIT_CODE_RANGES: tuple[ExitCodeRange, ...] = (
    ExitCodeRange(100, 199, 'scheduler (aiida-core)', False, False, False),
    ExitCodeRange(200, 299, 'input validation (aiida-core)', False, False, False),
    ExitCodeRange(
        300, 349, 'output files missing, unreadable, incomplete or inconsistent', True, False, True
    ),
    ExitCodeRange(350, 399, 'the engine reported an error', True, False, True),
    ExitCodeRange(400, 409, 'out of walltime: outputs kept, restartable', True, False, True),
    ExitCodeRange(
        410,
        449,
        'physics or convergence failure that a handler can restart (a work chain that gives up passes it on '
        'with the same label and number)',
        True,
        True,
        False,
    ),
    ExitCodeRange(
        450,
        479,
        'reserved: unphysical run (a guard on the physics of the MD failed; outputs kept)',
        True,
        True,
        False,
    ),
    ExitCodeRange(
        500, 599, 'work chain: a sub-process failed, or an input resolved at run time', False, True, False
    ),
    ExitCodeRange(700, 799, 'warning: the outputs are usable', True, True, False),
)


def exit_code_range(status: int) -> ExitCodeRange | None:
    """Return the range of ``status`` (``None`` outside the table)."""
    return next((entry for entry in EXIT_CODE_RANGES if entry.low <= status <= entry.high), None)


def invalidates_cache(status: int) -> bool:
    """Whether a CalcJob that failed with ``status`` must not be reused from the cache (300-409)."""
    entry = exit_code_range(status)
    return entry is not None and entry.invalidates_cache
