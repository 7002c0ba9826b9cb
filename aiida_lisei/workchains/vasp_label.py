"""``lisei.vasp.label``: label one structure with VASP (aiida-vasp's ``vasp.vasp``) as a training frame.

The VASP run is aiida-vasp's ``VaspWorkChain`` (restarts and error handlers included); its inputs are
exposed in the ``vasp`` namespace. The frame (energy eV, forces eV/Å, virial eV; see
:mod:`aiida_lisei.formats.vasp`) is built by the ``build_vasp_labels`` calcfunction from the
VASP CalcJob's ``misc`` output, so the graph links every label to the run that computed it. The level of
theory is read from the INCAR the CalcJob actually ran with, not from the protocol.

Inputs are checked before anything is stored: the POTCAR family exists and maps every kind, no two atoms
are closer than ``science.geometry.MIN_INTERATOMIC_DISTANCE``, ENCUT and the k-point spacing are positive,
PSTRESS is zero, the parser is asked for the chosen energy (and for the trajectory when ions move).
"""

from __future__ import annotations

import math
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ExitCode, ToContext, WorkChain, calcfunction
from aiida.plugins import WorkflowFactory
from aiida_vasp.data.potcar import PotcarData

from aiida_lisei.data.frames import LABEL_PATTERN as _SYSTEM_LABEL
from aiida_lisei.data.training_set import TrainingSetData, TrainingSetError
from aiida_lisei.formats.vasp import (
    ENERGY_TYPES,
    VaspOutputError,
    vasp_level_of_theory,
    vasp_training_frames,
)
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.protocols.utils import recursive_merge
from aiida_lisei.science.geometry import MIN_INTERATOMIC_DISTANCE, close_contact

__all__ = ('VaspLabelWorkChain', 'build_vasp_labels', 'kpoints_tag', 'validate_inputs')

VaspWorkChain = WorkflowFactory('vasp.vasp')


def _incar(parameters: orm.Dict | dict) -> dict[str, Any]:
    """The INCAR tags (lower-case keys) of aiida-vasp ``parameters``, nested under ``incar`` or flat."""
    parameters = parameters.get_dict() if isinstance(parameters, orm.Dict) else dict(parameters)
    return {key.lower(): value for key, value in parameters.get('incar', parameters).items()}


def kpoints_tag(kpoints: orm.KpointsData) -> str:
    """Frame tag of the k-points: ``'6x6x6'`` (Γ-centred mesh), ``'6x6x6+shift'`` or ``'list:<n>'``."""
    try:
        mesh, offset = kpoints.get_kpoints_mesh()
    except AttributeError:
        return f'list:{len(kpoints.get_kpoints())}'
    return 'x'.join(str(n) for n in mesh) + ('+shift' if any(offset) else '')


@calcfunction
def build_vasp_labels(
    misc: orm.Dict,
    structure: orm.StructureData,
    parameters: orm.Dict,
    kpoints: orm.KpointsData,
    potential_family: orm.Str,
    potential_mapping: orm.Dict,
    system_label: orm.Str,
    energy_type: orm.Str,
    type_map: orm.List | None = None,
    tags: orm.Dict | None = None,
    trajectory: orm.TrajectoryData | None = None,
) -> TrainingSetData | ExitCode:
    """Turn the ``misc`` of one VASP CalcJob into a one-frame training set (eV, eV/Å, eV virial).

    The geometry is the last ionic step of ``trajectory`` if given (relaxations), else ``structure``.
    ``labelled_by`` is the CalcJob that created ``misc``; the frame tags are ``tags`` plus
    ``kpoints_mesh`` and ``lreal``. Returns exit code 310 if ``misc`` lacks a label.
    """
    incar = _incar(parameters)
    atoms = structure.get_ase()
    positions, cell = atoms.get_positions(), atoms.cell.array
    if trajectory is not None:
        positions, cell = trajectory.get_array('positions')[-1], trajectory.get_array('cells')[-1]
    frame_tags = {
        **(tags.get_dict() if tags is not None else {}),
        'kpoints_mesh': kpoints_tag(kpoints),
        'lreal': str(incar.get('lreal', False)).lower(),
    }
    level = vasp_level_of_theory(
        incar, potential_family.value, potential_mapping.get_dict(), energy_type.value
    )
    try:
        frames = vasp_training_frames(
            atoms.get_chemical_symbols(),
            positions,
            cell,
            misc.get_dict(),
            system_label=system_label.value,
            level_of_theory=level,
            type_map=type_map.get_list() if type_map is not None else None,
            labelled_by=misc.creator.uuid if misc.creator is not None else None,
            tags=frame_tags,
        )
    except (VaspOutputError, TrainingSetError) as exception:
        return ExitCode(310, f'no training label from the VASP outputs: {exception}')
    return TrainingSetData(frames)


def _potential_errors(inputs: dict[str, Any]) -> list[str]:
    """Check that the POTCAR family exists and has a POTCAR for every kind of the structure."""
    family = inputs['potential_family'].value
    group = PotcarData.get_potcar_group(family)
    if group is None:
        known = sorted(group.label for group in PotcarData.get_potcar_groups())
        return [
            f'POTCAR family {family!r} is not in the database (families here: {known}); upload it with '
            f'`aiida-vasp potcar uploadfamily --path <POTCAR dir> --name {family}`'
        ]
    mapping = inputs['potential_mapping'].get_dict()
    kinds = inputs['structure'].get_kind_names()
    unmapped = [kind for kind in kinds if kind not in mapping]
    if unmapped:
        return [f'potential_mapping {mapping} has no POTCAR for the kind(s) {unmapped}: add them']
    available = {node.full_name for node in group.nodes}
    absent = sorted({mapping[kind] for kind in kinds} - available)
    if absent:
        return [
            f'POTCAR family {family!r} has no {absent} (it has {sorted(available)}): fix potential_mapping'
        ]
    return []


def _structure_errors(structure: orm.StructureData) -> list[str]:
    """Check for atoms closer than ``MIN_INTERATOMIC_DISTANCE`` (Å, periodic images included)."""
    contact = close_contact(structure.get_ase(), MIN_INTERATOMIC_DISTANCE)
    if contact is None:
        return []
    first, second, distance, pairs = contact
    return [
        f'atoms {first} and {second} are {distance:.3f} Å apart (< {MIN_INTERATOMIC_DISTANCE} Å): '
        f'{pairs} overlapping pair(s); fix the structure'
    ]


def _vasp_errors(vasp: dict[str, Any], energy_type: str) -> list[str]:
    """Check ENCUT, the k-points, PSTRESS and the parser settings the labels need."""
    errors = []
    incar = _incar(vasp['parameters'])
    if 'encut' in incar and not float(incar['encut']) > 0:
        errors.append(f'ENCUT must be > 0 eV, got {incar["encut"]}')
    if float(incar.get('pstress', 0.0)) != 0.0:
        errors.append('PSTRESS must be 0: it adds p·V to the energy and shifts the stress of the labels')
    spacing = vasp.get('kpoints_spacing')
    if 'kpoints' not in vasp and spacing is None:
        errors.append('give vasp.kpoints or vasp.kpoints_spacing')
    if 'kpoints' not in vasp and spacing is not None and not spacing.value > 0:
        errors.append(f'vasp.kpoints_spacing must be > 0 Å^-1, got {spacing.value}')
    parser = vasp['settings'].get_dict().get('parser_settings', {}) if 'settings' in vasp else {}
    if energy_type not in parser.get('energy_type', ['energy_extrapolated']):
        errors.append(f"add {energy_type!r} to vasp.settings['parser_settings']['energy_type']")
    excluded = {'forces', 'stress', 'total_energies'} & set(parser.get('exclude_quantity', []))
    if excluded:
        errors.append(f"remove {sorted(excluded)} from vasp.settings['parser_settings']['exclude_quantity']")
    ions_move = int(incar.get('nsw', 0)) > 0 and int(incar.get('ibrion', 0)) != -1
    if ions_move and 'trajectory' not in parser.get('include_node', []):
        errors.append(
            "ions move (NSW > 0): add 'trajectory' to vasp.settings['parser_settings']['include_node']"
        )
    return errors


def validate_inputs(inputs: dict[str, Any], _: Any) -> str | None:
    """Return every problem of the inputs in one message, or ``None``; runs before any node is stored."""
    errors = []
    if not _SYSTEM_LABEL.match(inputs['system_label'].value):
        errors.append(f'system_label {inputs["system_label"].value!r} must match {_SYSTEM_LABEL.pattern}')
    elements = set(inputs['structure'].get_symbols_set())
    if 'type_map' in inputs and not elements <= set(inputs['type_map'].get_list()):
        missing = sorted(elements - set(inputs['type_map'].get_list()))
        errors.append(
            f'type_map {inputs["type_map"].get_list()} lacks the element(s) {missing} of the structure'
        )
    if inputs['energy_type'].value not in ENERGY_TYPES:
        errors.append(f'energy_type must be one of {ENERGY_TYPES}, got {inputs["energy_type"].value!r}')
    errors += _potential_errors(inputs) + _structure_errors(inputs['structure'])
    errors += _vasp_errors(inputs['vasp'], inputs['energy_type'].value)
    return '; '.join(errors) or None


class VaspLabelWorkChain(ProtocolMixin, WorkChain):
    """Compute the DFT label (energy, forces, virial) of one structure with VASP as a ``TrainingSetData``."""

    _protocol_file = 'vasp_label'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(
            VaspWorkChain,
            namespace='vasp',
            exclude=('structure', 'potential_family', 'potential_mapping'),
            namespace_options={
                'help': 'Inputs of the `vasp.vasp` workchain (aiida-vasp), structure excluded.'
            },
        )
        spec.input('structure', valid_type=orm.StructureData, help='The structure to label (Å).')
        spec.input('system_label', valid_type=orm.Str, help='System of the frame, e.g. `bcc_lithium`.')
        spec.input(
            'tags', valid_type=orm.Dict, required=False, help='Scalar frame tags, e.g. temperature (K).'
        )
        spec.input('potential_family', valid_type=orm.Str, help='Name of an uploaded POTCAR family.')
        spec.input(
            'potential_mapping', valid_type=orm.Dict, help='Kind name -> POTCAR, e.g. {"Li": "Li_sv"}.'
        )
        spec.input(
            'energy_type',
            valid_type=orm.Str,
            default=lambda: orm.Str('energy_free'),
            help=f'Energy of the label, one of {ENERGY_TYPES} (aiida-vasp names).',
        )
        spec.input('type_map', valid_type=orm.List, required=False, help='DeePMD type map (element order).')
        spec.inputs.validator = validate_inputs
        spec.output(
            'labels', valid_type=TrainingSetData, help='One frame: energy eV, forces eV/Å, virial eV.'
        )
        spec.output('misc', valid_type=orm.Dict, help='The `misc` output of the VASP CalcJob.')
        spec.outline(cls.run_vasp, cls.inspect_vasp, cls.results)
        spec.exit_code(
            501,
            'ERROR_SUB_PROCESS_FAILED_VASP',
            message='the vasp.vasp workchain failed with exit status {exit_status}',
        )
        spec.exit_code(510, 'ERROR_LABELS_UNAVAILABLE', message='no label from the VASP outputs: {message}')

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        structure: orm.StructureData,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        *,
        potential_family: str,
        system_label: str,
        tags: dict[str, Any] | None = None,
    ):
        """Return a builder for ``structure`` from the ``paper`` (single point) or ``relax`` protocol.

        :param code: a code of the ``vasp.vasp`` calculation plugin.
        :param potential_family: name of an uploaded POTCAR family (``aiida-vasp potcar listfamilies``).
        :param system_label: system of the frame; picks the k-point spacing (``kpoints_spacing`` in the YAML).
        :param overrides: nested dict merged over the protocol, e.g. ``{'vasp': {'parameters': ...}}``.
        :param options: merged into ``vasp.calc.metadata.options`` (resources, walltime, queue).
        :param tags: scalar frame tags (temperature in K, source, ...).
        """
        if not potential_family or PotcarData.get_potcar_group(potential_family) is None:
            raise ValueError(
                f'potential_family {potential_family!r} is not an uploaded POTCAR family; upload one with '
                '`aiida-vasp potcar uploadfamily` and pass its name'
            )
        inputs = cls.get_protocol_inputs(protocol, overrides)
        spacings = inputs['kpoints_spacing']
        spacing = float(spacings.get(system_label, spacings['default']))
        if not spacing > 0:
            raise ValueError(f'k-point spacing for {system_label!r} must be > 0 Å^-1, got {spacing}')
        kpoints = orm.KpointsData()
        kpoints.set_cell_from_structure(structure)
        kpoints.set_kpoints_mesh_from_density(2 * math.pi * spacing)

        vasp = inputs['vasp']
        if len(structure.sites) > inputs['lreal_auto_above']:
            vasp['parameters']['incar']['lreal'] = 'Auto'
        metadata = vasp.get('calc', {}).get('metadata', {})
        metadata['options'] = recursive_merge(metadata.get('options', {}), options or {})

        builder = cls.get_builder()
        builder.structure = structure
        builder.system_label = orm.Str(system_label)
        if tags:
            builder.tags = orm.Dict(tags)
        builder.potential_family = orm.Str(potential_family)
        builder.potential_mapping = orm.Dict(inputs['potential_mapping'])
        builder.energy_type = orm.Str(inputs['energy_type'])
        builder.type_map = orm.List(inputs['type_map'])
        builder.vasp.code = code
        builder.vasp.parameters = orm.Dict(vasp['parameters'])
        builder.vasp.settings = orm.Dict(vasp['settings'])
        builder.vasp.kpoints = kpoints
        builder.vasp.max_iterations = orm.Int(vasp['max_iterations'])
        builder.vasp.clean_workdir = orm.Bool(vasp['clean_workdir'])
        builder.vasp.calc.metadata = metadata
        return builder

    def run_vasp(self):
        """Run the ``vasp.vasp`` workchain on the structure."""
        inputs = AttributeDict(self.exposed_inputs(VaspWorkChain, namespace='vasp'))
        inputs.structure = self.inputs.structure
        inputs.potential_family = self.inputs.potential_family
        inputs.potential_mapping = self.inputs.potential_mapping
        inputs.metadata.call_link_label = 'vasp'
        running = self.submit(VaspWorkChain, **inputs)
        self.report(f'launching VaspWorkChain<{running.pk}> for {self.inputs.system_label.value}')
        return ToContext(vasp=running)

    def inspect_vasp(self):
        """Fail if the VASP workchain did not finish successfully."""
        if not self.ctx.vasp.is_finished_ok:
            self.report(
                f'VaspWorkChain<{self.ctx.vasp.pk}> failed with exit status {self.ctx.vasp.exit_status}'
            )
            return self.exit_codes.ERROR_SUB_PROCESS_FAILED_VASP.format(exit_status=self.ctx.vasp.exit_status)
        return None

    def results(self):
        """Build the labels from the VASP CalcJob's outputs and attach them."""
        misc = self.ctx.vasp.outputs.misc
        calcjob = misc.creator
        optional = {
            key: node
            for key, node in (
                ('type_map', self.inputs.get('type_map')),
                ('tags', self.inputs.get('tags')),
                ('trajectory', getattr(self.ctx.vasp.outputs, 'trajectory', None)),
            )
            if node is not None
        }
        labels, node = build_vasp_labels.run_get_node(
            misc=misc,
            structure=self.inputs.structure,
            parameters=calcjob.inputs.parameters,
            kpoints=calcjob.inputs.kpoints,
            potential_family=self.inputs.potential_family,
            potential_mapping=self.inputs.potential_mapping,
            system_label=self.inputs.system_label,
            energy_type=self.inputs.energy_type,
            **optional,
        )
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_LABELS_UNAVAILABLE.format(message=node.exit_message)
        self.out('labels', labels)
        self.out('misc', misc)
        self.report(f'labels {labels.level_of_theory_key} <PK={labels.pk}> from CalcJob<{calcjob.pk}>')
        return None
