"""``EngineProbeParser``: turn the JSON report of ``lisei-probe`` into an ``engines`` Dict."""

from __future__ import annotations

import json
from typing import Any

from aiida import orm
from aiida.engine import ExitCode

from aiida_lisei.parsers.base import LiseiParser

__all__ = ('EngineProbeParser', 'parse_probe_report')


def parse_probe_report(text: str) -> dict[str, Any]:
    """Return the report in ``text`` with a sorted ``missing`` list of engines that are not available.

    Raises ``ValueError`` if ``text`` is not JSON or has no ``engines`` table
    of ``{name: {'available': bool, ...}}``.
    """
    report = json.loads(text)  # json.JSONDecodeError is a ValueError
    engines = report.get('engines') if isinstance(report, dict) else None
    if not isinstance(engines, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get('available'), bool) for entry in engines.values()
    ):
        raise ValueError('no `engines` table of {name: {"available": bool, ...}} in the report')
    report['missing'] = sorted(name for name, entry in engines.items() if not entry['available'])
    return report


class EngineProbeParser(LiseiParser):
    """Parser of ``EngineProbeCalculation`` (entry point ``lisei.probe``).

    Reads the report file (``metadata.options.report_filename``, ``probe.json`` by default) from the
    retrieved folder and attaches it as the ``engines`` Dict, with an added ``missing`` list of names.
    Missing engines are not an error (the report says how to install them); they are logged as a warning.
    If the scheduler already reported an error (e.g. 120, out of walltime) and no report was retrieved,
    the scheduler's exit code is kept.
    """

    def parse_outputs(self, **kwargs: Any) -> ExitCode | None:
        """Parse the retrieved report; return 302 if it is absent, 310 if it is unreadable."""
        filename = self.node.get_option('report_filename') or 'probe.json'
        report = self.parse_file(filename, parse_probe_report)

        host = report.get('host', '?')
        if report['missing']:
            hints = '; '.join(
                f'{name}: {report["engines"][name].get("how_to_install", "?")}' for name in report['missing']
            )
            self.logger.warning(f'engines missing on {host}: {", ".join(report["missing"])} ({hints})')
        else:
            self.logger.info(f'all {len(report["engines"])} engines available on {host}')

        self.out('engines', orm.Dict(report))
        return None
