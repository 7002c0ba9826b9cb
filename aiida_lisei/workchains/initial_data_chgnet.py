"""``lisei.initial_data.chgnet``: ``lisei.initial_data`` with CHGNet for the relax/MD and the labels.

The pretrained CHGNet (``lisei.chgnet_md``, then ``lisei.label`` on the ``chgnet`` engine) makes a demo
initial dataset of systems that tblite cannot afford here (the interface and the sandwich: 0.7-1.3 s per step
of 185-230 atoms against ~5 min per tblite single point). Its labels are CHGNet's level of theory (MPtrj
PBE/PBE+U), not the paper's PBE: they never mix with other labels in one training set.
"""

from __future__ import annotations

from aiida_lisei.calculations.ase_md import ChgnetMdCalculation
from aiida_lisei.workchains.initial_data import InitialDataWorkChain

__all__ = ('InitialDataChgnetWorkChain',)


class InitialDataChgnetWorkChain(InitialDataWorkChain):
    """``lisei.initial_data`` with ``lisei.chgnet_md`` as the relax/MD engine and ``chgnet`` labels.

    The protocols of ``initial_data.yaml`` apply (``demo_chgnet`` is written for it); the ``chgnet`` section
    of the relax/MD parameters is kept and the ``tblite`` one dropped. Codes: ``lisei-chgnet-md`` and
    ``lisei-chgnet``.
    """

    _engine_process = ChgnetMdCalculation
    _label_engine = 'chgnet'
