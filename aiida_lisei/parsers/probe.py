"""``EngineProbeParser``: turn the JSON report of ``lisei-probe`` into an ``engines`` Dict."""

from __future__ import annotations

import json
from typing import Any

from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

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


class EngineProbeParser(Parser):
    """Parser of ``EngineProbeCalculation`` (entry point ``lisei.probe``).

    Reads the report file (``metadata.options.report_filename``, ``probe.json`` by default) from the
    retrieved folder and attaches it as the ``engines`` Dict, with an added ``missing`` list of names.
    Missing engines are not an error (the report says how to install them); they are logged as a warning.
    If the scheduler already reported an error (e.g. 120, out of walltime) and no report was retrieved,
    the scheduler's exit code is kept.
    """

    def parse(self, **kwargs: Any) -> ExitCode | None:
        """Parse the retrieved report; return 302 if it is absent, 310 if it is unreadable."""
        filename = self.node.get_option('report_filename') or 'probe.json'
        try:
            text = self.retrieved.base.repository.get_object_content(filename, mode='r')
        except (FileNotFoundError, OSError):
            return self._scheduler_exit_code() or self.exit_codes.ERROR_OUTPUT_MISSING.format(
                filename=filename
            )

        try:
            report = parse_probe_report(text)
        except ValueError as exception:
            return self.exit_codes.ERROR_OUTPUT_UNREADABLE.format(filename=filename, exception=exception)

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

    def _scheduler_exit_code(self) -> ExitCode | None:
        """Return the exit code the scheduler output parser set on the node (status > 0), else ``None``."""
        status = self.node.exit_status
        if not status:
            return None
        known = [code for code in self.exit_codes.values() if code.status == status]
        return known[0] if known else ExitCode(status, self.node.exit_message or '')
