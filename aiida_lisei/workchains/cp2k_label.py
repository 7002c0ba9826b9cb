"""``lisei.cp2k.label``: label one structure with a CP2K single point (energy, forces, virial).

Runs ``lisei.cp2k.base`` (aiida-cp2k's ``cp2k`` CalcJob with the
:class:`~aiida_lisei.parsers.cp2k.Cp2kLabelParser`, restarted on recoverable failures; its inputs are exposed
here as they are) and turns the parsed arrays into a one-frame
:class:`~aiida_lisei.data.training_set.TrainingSetData` through a calcfunction, so the graph reads
``structure + parameters + parsed outputs -> labels``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, calcfunction
from ase.calculators.singlepoint import SinglePointCalculator

from aiida_lisei.data.training_set import FrameSystem, TrainingSetData, TrainingSetError
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.workchains.cp2k_base import (
    Cp2kBaseWorkChain,
    add_kinds,
    calculations,
    check_structure,
    cp2k_exit_code,
    define_cp2k_exit_codes,
    dft_section,
    is_xtb,
    kind_element,
    kind_sections,
    scale_with_size,
    section_on,
    structure_kinds,
    validate_cp2k_inputs,
    validate_inputs,
)

__all__ = (
    'Cp2kLabelWorkChain',
    'build_cp2k_labels',
    'check_label_and_tags',
    'get_level_of_theory',
)


def get_level_of_theory(parameters: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Return the level of theory of labels computed with CP2K ``parameters`` by CP2K ``version``.

    Only settings that define the converged result are recorded: method, basis and pseudopotential per
    element, XC functional, plane-wave cutoffs (Ry), smearing (method, electronic temperature in K), Ewald
    for xTB, total charge, k-points (always Γ here). Solver settings (mixing, OT, MAX_SCF, ADDED_MOS,
    EPS_SCF) are left out, so frames of systems of different sizes and SCF settings stay mergeable;
    the restart handlers therefore never change a recorded setting.
    """
    dft = dft_section(parameters)
    scf = dft.get('SCF', {})
    smear = scf.get('SMEAR')
    settings: dict[str, Any] = {
        'charge': dft.get('CHARGE', 0),
        'kpoints': 'gamma',
        'smearing': (
            {
                'method': smear.get('METHOD', 'FERMI_DIRAC'),
                'electronic_temperature': smear.get('ELECTRONIC_TEMPERATURE'),
            }
            if section_on(smear)
            else None
        ),
    }
    if is_xtb(parameters):
        xtb = dft.get('QS', {}).get('XTB', {})
        settings['do_ewald'] = bool(xtb.get('DO_EWALD', False))
        return {'engine': 'cp2k', 'method': 'GFN1-xTB', 'version': version, 'settings': settings}
    mgrid = dft.get('MGRID', {})
    functional = dft.get('XC', {}).get('XC_FUNCTIONAL', {})
    functional = functional.get('_', 'PBE') if isinstance(functional, Mapping) else str(functional)
    settings.update(
        {
            'basis_set': {
                kind_element(name, kind): kind.get('BASIS_SET')
                for name, kind in kind_sections(parameters).items()
            },
            'pseudopotential': {
                kind_element(name, kind): kind.get('POTENTIAL')
                for name, kind in kind_sections(parameters).items()
            },
            'cutoff': mgrid.get('CUTOFF'),
            'rel_cutoff': mgrid.get('REL_CUTOFF'),
        }
    )
    return {'engine': 'cp2k', 'method': functional.upper(), 'version': version, 'settings': settings}


def check_label_and_tags(system_label: str, tags: Mapping[str, Any] | None) -> str | None:
    """Return TrainingSetData's error message for this system label and these frame tags, or ``None``."""
    try:
        FrameSystem(
            system_label, [0], np.zeros((1, 1, 3)), np.eye(3)[None], [0.0], np.zeros((1, 1, 3)), tags=tags
        )
    except TrainingSetError as exception:
        return str(exception)
    return None


def _atoms_with_labels(structure: orm.StructureData, output_parameters: orm.Dict, forces, stress):
    """Return the ASE atoms of ``structure`` with a single-point calculator holding the parsed labels."""
    atoms = structure.get_ase()
    calculator = SinglePointCalculator(
        atoms,
        energy=output_parameters['energy'],
        forces=forces.get_array('forces'),
        stress=None if stress is None else stress.get_array('stress'),
    )
    atoms.calc = calculator
    return atoms


@calcfunction
def build_cp2k_labels(
    structure: orm.StructureData,
    parameters: orm.Dict,
    output_parameters: orm.Dict,
    forces: orm.ArrayData,
    system_label: orm.Str,
    stress: orm.ArrayData | None = None,
    tags: orm.Dict | None = None,
    type_map: orm.List | None = None,
) -> TrainingSetData:
    """Make a one-frame training set from a CP2K single point (eV, eV/Å; virial = -stress * V in eV).

    ``labelled_by`` is the CalcJob that created ``output_parameters``; the level of theory comes from the
    CalcJob's input ``parameters`` and the CP2K version it printed.
    """
    level = get_level_of_theory(parameters.get_dict(), output_parameters['cp2k_version'])
    return TrainingSetData.from_ase(
        [_atoms_with_labels(structure, output_parameters, forces, stress)],
        level,
        system_label.value,
        type_map=None if type_map is None else type_map.get_list(),
        labelled_by=output_parameters.creator.uuid,
        tags=None if tags is None else tags.get_dict(),
        with_virials=stress is not None,
    )


# ----------------------------------------------------------------------------------------------------------
# Work chain
# ----------------------------------------------------------------------------------------------------------


def _validate_label(inputs: Mapping[str, Any], ctx: Any = None) -> str | None:
    """Check the CP2K inputs (as ``lisei.cp2k.base`` does), the system label and the frame tags."""
    message = validate_inputs(inputs, ctx)
    if message:
        return message
    if 'system_label' in inputs:
        tags = inputs['tags'].get_dict() if 'tags' in inputs else None
        return check_label_and_tags(inputs['system_label'].value, tags)
    return None


#: Failures of ``lisei.cp2k.base`` passed on with their label and number (the table's rule).
PASSED_ON = ('ERROR_SCF_NOT_CONVERGED', 'ERROR_WALLTIME_CAP_REACHED')


class Cp2kLabelWorkChain(ProtocolMixin, WorkChain):
    """Label one structure with CP2K (energy eV, forces eV/Å, virial eV), restarted by ``lisei.cp2k.base``."""

    _protocol_file = 'cp2k'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(Cp2kBaseWorkChain)
        spec.inputs['structure'].help = 'Structure to label (Å).'
        spec.input('system_label', valid_type=orm.Str, help='System label of the frame in the training set.')
        spec.input(
            'tags',
            valid_type=orm.Dict,
            required=False,
            help='Scalar tags of the frame, e.g. `temperature` (K), `iteration`, `source`.',
        )
        spec.input(
            'type_map',
            valid_type=orm.List,
            required=False,
            help='Element order of the training set (default: order of first appearance).',
        )
        spec.input(
            'with_virials',
            valid_type=orm.Bool,
            default=lambda: orm.Bool(True),
            help='Whether the labels carry the virial (not for GFN1-xTB metals: unreliable stress).',
        )
        spec.inputs['cp2k']['metadata']['options']['parser_name'].default = 'lisei.cp2k'
        spec.inputs.validator = _validate_label
        spec.outline(cls.run_cp2k, cls.inspect_cp2k, cls.create_labels)
        spec.output('output_parameters', valid_type=orm.Dict, help='Energy (eV), SCF info, CP2K version.')
        spec.output('forces', valid_type=orm.ArrayData, help='Forces (eV/Å), array `forces`.')
        spec.output(
            'stress',
            valid_type=orm.ArrayData,
            required=False,
            help='Stress (eV/Å³, ASE sign), array `stress`.',
        )
        spec.output('labels', valid_type=TrainingSetData, help='One labelled frame (DeePMD units and signs).')
        define_cp2k_exit_codes(spec, PASSED_ON)

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.Code,
        structure: orm.StructureData,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        system_label: str | None = None,
        tags: dict[str, Any] | None = None,
        type_map: list[str] | None = None,
    ):
        """Return a builder filled from a protocol (``gfn1_xtb`` by default); no node is stored.

        :param code: a code of the ``cp2k`` plugin.
        :param structure: the structure to label (periodic, no atoms closer than 0.5 Å).
        :param protocol: ``gfn1_xtb`` (metal/insulator picked from the composition), ``gfn1_xtb_metal``,
            ``gfn1_xtb_insulator`` or ``pbe``.
        :param overrides: nested dict merged over the protocol (``cp2k.parameters`` is CP2K's input).
        :param options: merged into ``cp2k.metadata.options`` (resources, max_wallclock_seconds, ...).
        :param system_label: label of the frame's system (default: the structure's formula).
        :param tags: scalar frame tags (temperature in K, iteration, source, ...).
        :param type_map: element order of the training set.
        :raises ValueError: unknown protocol, unsupported species, bad cutoff, overlapping atoms, bad label.
        """
        atoms = structure.get_ase()
        elements = set(atoms.get_chemical_symbols())
        protocol = Cp2kBaseWorkChain.resolve_protocol(protocol, elements)
        inputs = cls.get_protocol_inputs(protocol, overrides)
        kinds = structure_kinds(structure)
        parameters = add_kinds(inputs['cp2k']['parameters'], inputs.get('kinds', {}), kinds)
        parameters = scale_with_size(parameters, len(atoms), inputs['meta_parameters'])
        system_label = system_label or structure.get_formula(mode='hill')
        message = (
            check_structure(atoms)
            or validate_cp2k_inputs(parameters, kinds)
            or check_label_and_tags(system_label, tags)
        )
        if message:
            raise ValueError(f'protocol `{protocol}`: {message}')

        metadata = copy.deepcopy(inputs['cp2k'].get('metadata', {}))
        metadata.setdefault('options', {}).update({'parser_name': 'lisei.cp2k', **(options or {})})
        builder = cls.get_builder()
        builder.cp2k.code = code
        builder.cp2k.parameters = orm.Dict(parameters)
        builder.cp2k.metadata = metadata
        builder.structure = structure
        builder.system_label = orm.Str(system_label)
        if tags:
            builder.tags = orm.Dict(tags)
        if type_map:
            builder.type_map = orm.List(list(type_map))
        builder.with_virials = orm.Bool(inputs['with_virials'])
        builder.clean_workdir = orm.Bool(inputs['clean_workdir'])
        builder.max_iterations = orm.Int(inputs['max_iterations'])
        return builder

    def run_cp2k(self):
        """Run the single point through ``lisei.cp2k.base`` (restarts included)."""
        inputs = AttributeDict(self.exposed_inputs(Cp2kBaseWorkChain))
        inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': 'cp2k'}
        node = self.submit(Cp2kBaseWorkChain, **inputs)
        self.report(f'CP2K single point <PK={node.pk}> submitted')
        return ToContext(base=node)

    def inspect_cp2k(self):
        """Attach the parsed outputs; pass on the base's SCF or walltime failure, fail on any other."""
        node = self.ctx.base
        exit_code = cp2k_exit_code(node, self.exit_codes, PASSED_ON)
        if exit_code is not None:
            return exit_code
        for name in ('output_parameters', 'forces', 'stress'):
            if name in node.outputs:
                self.out(name, node.outputs[name])
        return None

    def create_labels(self):
        """Build the one-frame training set from the last CalcJob through a calcfunction."""
        node = calculations(self.ctx.base)[-1]
        inputs = {
            'structure': self.inputs.structure,
            'parameters': node.inputs.parameters,
            'output_parameters': node.outputs.output_parameters,
            'forces': node.outputs.forces,
            'system_label': self.inputs.system_label,
        }
        for name in ('tags', 'type_map'):
            if name in self.inputs:
                inputs[name] = self.inputs[name]
        if self.inputs.with_virials and 'stress' in node.outputs:
            inputs['stress'] = node.outputs.stress
        labels = build_cp2k_labels(**inputs)
        self.out('labels', labels)
        self.report(
            f'labels {labels.level_of_theory_key} <PK={labels.pk}> from {node.process_label}<{node.pk}>'
        )
