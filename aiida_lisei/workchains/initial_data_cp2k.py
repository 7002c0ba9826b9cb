"""``lisei.initial_data.cp2k``: ``lisei.initial_data`` with ``lisei.cp2k.md`` as the relax/MD engine.

The paper's AIMD (PBE) of the initial dataset; the labels come from ``lisei.label`` on the ``cp2k`` engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.engine import ProcessBuilder

from aiida_lisei.engines.calculators import CALCULATORS
from aiida_lisei.workchains.cp2k_base import Cp2kBaseWorkChain, add_kinds
from aiida_lisei.workchains.cp2k_md import PARSER, Cp2kMdWorkChain
from aiida_lisei.workchains.initial_data import LABEL_EXCLUDED, InitialDataWorkChain
from aiida_lisei.workchains.label import LabelWorkChain

__all__ = ('InitialDataCp2kWorkChain',)


class InitialDataCp2kWorkChain(InitialDataWorkChain):
    """``lisei.initial_data`` with ``lisei.cp2k.md`` as the relax/MD engine (the paper's AIMD).

    The protocols of ``initial_data.yaml`` apply; in ``relax`` and ``md`` a ``cp2k_protocol`` names the
    ``lisei.cp2k.label`` protocol of the FORCE_EVAL (``pbe`` for ``paper_cp2k``) and the calculators' sections
    (``tblite``, ``chgnet``) are dropped. The FORCE_EVAL gets the protocol's KIND sections of all its elements
    (CP2K ignores those of absent kinds), so one ``cp2k.parameters`` serves every system; SCF sizes are set
    per system.
    """

    _engine_process = Cp2kMdWorkChain
    _label_engine = None  # the labelling inputs are CP2K's, filled below

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        label_code: orm.AbstractCode,
        structures: Mapping[str, orm.StructureData],
        *,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """Return a builder as ``lisei.initial_data``'s, with ``lisei.label`` on the ``cp2k`` engine.

        :param code: ``cp2k.psmp`` (relax and MD); :param label_code: ``cp2k.psmp`` (labels).
        The labelling FORCE_EVAL is ``label.cp2k_protocol`` of ``lisei.cp2k.label``, built on the largest
        system (its KIND sections and SCF sizes serve all systems: give it every element).
        """
        builder = super().get_builder_from_protocol(
            code, label_code, structures, protocol=protocol, overrides=overrides
        )
        inputs = cls.get_protocol_inputs(protocol, overrides)['label']
        largest = max(structures.values(), key=lambda structure: len(structure.sites))
        label = LabelWorkChain.get_builder_from_protocol(
            label_code,
            {'largest': largest},
            system_label='unused',
            engine='cp2k',
            protocol=inputs.get('protocol'),
            overrides=inputs.get('overrides'),
            engine_protocol=inputs['cp2k_protocol'],
            options=inputs.get('options'),
        )
        builder.label = {
            key: value for key, value in label._inputs(prune=True).items() if key not in LABEL_EXCLUDED
        }
        return builder

    @classmethod
    def _set_engine_inputs(cls, namespace: Any, code: orm.AbstractCode, inputs: Mapping[str, Any]) -> None:
        """Fill ``relax``/``md``: ``cp2k`` from ``cp2k_protocol``, ``parameters`` without calculators."""
        if Cp2kBaseWorkChain.selects_by_composition(inputs['cp2k_protocol']):
            raise ValueError(
                f'cp2k_protocol `{inputs["cp2k_protocol"]}` picks its settings per structure: one FORCE_EVAL '
                'serves all systems here, name a concrete protocol (e.g. `gfn1_xtb_insulator`, `pbe`)'
            )
        protocol = Cp2kBaseWorkChain.get_protocol_inputs(inputs['cp2k_protocol'])
        kinds = protocol.get('kinds', {})
        namespace.cp2k.code = code
        namespace.cp2k.parameters = orm.Dict(
            add_kinds(protocol['cp2k']['parameters'], kinds, {element: element for element in kinds})
        )
        namespace.cp2k.metadata.options = {**inputs['metadata']['options'], 'parser_name': PARSER}
        namespace.parameters = orm.Dict(
            {key: value for key, value in inputs['parameters'].items() if key not in CALCULATORS}
        )
        namespace.clean_workdir = orm.Bool(protocol['clean_workdir'])
        namespace.max_iterations = orm.Int(protocol['max_iterations'])
