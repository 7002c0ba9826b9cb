"""Shared base of the restart workchains of aiida-lisei (BaseRestartWorkChain + protocols)."""

from __future__ import annotations

from aiida import orm
from aiida.engine import BaseRestartWorkChain

from aiida_lisei.protocols import ProtocolMixin

__all__ = ('LiseiBaseRestartWorkChain',)


class LiseiBaseRestartWorkChain(ProtocolMixin, BaseRestartWorkChain):
    """``BaseRestartWorkChain`` with protocols and the report line every handler writes."""

    def report_error_handled(self, calculation: orm.CalcJobNode, action: str) -> None:
        """Report the failed child's exit status and message, and the action the handler takes."""
        failure = f'exit status {calculation.exit_status}: {calculation.exit_message}'
        self.report(f'{calculation.process_label}<{calculation.pk}> failed with {failure}')
        self.report(f'action taken: {action}')
