"""``lisei.atomic_models``: build the study's four atomic models with full provenance.

bcc Li (16 atoms), ordered Li6PS5Cl (52), the Li/Li6PS5Cl interface (185) and the
Li|Li6PS5Cl|Li sandwich (4833 in the ``paper`` protocol), each by a calcfunction whose
parameters are inputs, so reruns are served from the cache and every number in the
summary traces back to them.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.engine import WorkChain, calcfunction

from aiida_lisei.common.validation import dict_port_validator
from aiida_lisei.data.structure import GroupedStructureData
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.structures import functions, parameters

__all__ = ('AtomicModelsWorkChain',)

#: model name -> (calcfunction, parameter validator); the order is the build order.
MODELS = {
    'bcc_lithium': (functions.build_bcc_lithium, parameters.validate_bcc_lithium_parameters),
    'argyrodite': (functions.build_argyrodite, parameters.validate_argyrodite_parameters),
    'interface': (functions.build_interface, parameters.validate_interface_parameters),
    'sandwich': (functions.build_sandwich, parameters.validate_sandwich_parameters),
}


@calcfunction
def summarize_models(**structures: GroupedStructureData) -> orm.Dict:
    """Collect atoms per region, cell lengths (Å) and lateral strain of every model."""
    return orm.Dict({name: functions.summarize_model(structure) for name, structure in structures.items()})


class AtomicModelsWorkChain(ProtocolMixin, WorkChain):
    """Build bcc Li, ordered Li6PS5Cl, the Li/Li6PS5Cl interface and the Li|Li6PS5Cl|Li sandwich."""

    _protocol_file = 'atomic_models'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        for name, (_, validate) in MODELS.items():
            spec.input(
                f'{name}.parameters',
                valid_type=orm.Dict,
                validator=dict_port_validator(validate),
                help=f'Complete parameters of the {name} model (see `aiida_lisei.structures.parameters`).',
            )
            spec.output(name, valid_type=GroupedStructureData, help=f'The {name} model with atom groups.')
        spec.input(
            'argyrodite.seed',
            valid_type=orm.Int,
            help='Seed of the Li ordering search on the 48h sites of Li6PS5Cl.',
        )
        spec.output(
            'summary', valid_type=orm.Dict, help='Atoms per region, cell (Å) and strain of each model.'
        )
        spec.outline(
            cls.build_bulk_models,
            cls.build_interface_models,
            cls.summarize,
        )

    @classmethod
    def get_builder_from_protocol(cls, protocol: str | None = None, overrides: dict[str, Any] | None = None):
        """Return a builder filled from the ``demo`` or ``paper`` protocol.

        :param protocol: ``demo`` (a small sandwich of the paper's shape) or ``paper`` (4833 atoms).
        :param overrides: nested dict merged over the protocol, e.g. ``{'sandwich': {'parameters': {...}}}``.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        for name, (_, validate) in MODELS.items():
            builder[name]['parameters'] = orm.Dict(validate(inputs[name]['parameters']))
        builder.argyrodite.seed = orm.Int(inputs['argyrodite']['seed'])
        return builder

    def build_bulk_models(self):
        """Build bcc Li and the ordered Li6PS5Cl cell."""
        self.ctx.bcc_lithium = functions.build_bcc_lithium(self.inputs.bcc_lithium.parameters)
        self.ctx.argyrodite = functions.build_argyrodite(
            self.inputs.argyrodite.parameters, self.inputs.argyrodite.seed
        )
        for name in ('bcc_lithium', 'argyrodite'):
            self.out(name, self.ctx[name])
        self.report(
            f'Li6PS5Cl ordered cell: {self.ctx.argyrodite.get_formula()} <PK={self.ctx.argyrodite.pk}>'
        )

    def build_interface_models(self):
        """Stack the interface and the sandwich on the ordered electrolyte cell."""
        for name in ('interface', 'sandwich'):
            build = MODELS[name][0]
            structure = build(self.ctx.argyrodite, self.inputs[name].parameters)
            self.ctx[name] = structure
            self.out(name, structure)
            self.report(
                f'{name}: {len(structure.sites)} atoms, groups {structure.group_counts} <PK={structure.pk}>'
            )

    def summarize(self):
        """Attach the summary of all four models."""
        self.out('summary', summarize_models(**{name: self.ctx[name] for name in MODELS}))
