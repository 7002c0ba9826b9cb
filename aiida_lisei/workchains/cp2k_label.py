"""``lisei.cp2k.label``: label one structure with a CP2K single point (energy, forces, virial).

Runs aiida-cp2k's ``cp2k`` CalcJob with the :class:`~aiida_lisei.parsers.cp2k.Cp2kLabelParser`, restarts it
on recoverable failures and turns the parsed arrays into a one-frame
:class:`~aiida_lisei.data.training_set.TrainingSetData` through a calcfunction, so the graph reads
``structure + parameters + parsed outputs -> labels``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessHandlerReport, calcfunction, process_handler, while_
from aiida.plugins import CalculationFactory
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from aiida_lisei.data.training_set import FrameSystem, TrainingSetData, TrainingSetError
from aiida_lisei.workchains.restart import LiseiBaseRestartWorkChain

__all__ = (
    'Cp2kLabelWorkChain',
    'build_cp2k_labels',
    'gentler_scf',
    'get_level_of_theory',
    'validate_cp2k_inputs',
)

Cp2kCalculation = CalculationFactory('cp2k')

#: Atoms closer than this (Å, periodic images included) are refused before submission.
MIN_INTERATOMIC_DISTANCE = 0.5

#: Elements counted as non-metals when a ``select_by_composition`` protocol picks metal or insulator settings.
NON_METALS = frozenset(
    'H He B C N O F Ne Si P S Cl Ar Ge As Se Br Kr Sb Te I Xe At Rn'.split()  # noqa: SIM905
)


# ----------------------------------------------------------------------------------------------------------
# Pure helpers (no database access)
# ----------------------------------------------------------------------------------------------------------


def _dft(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``FORCE_EVAL/DFT`` of CP2K parameters (``{}`` if absent)."""
    return parameters.get('FORCE_EVAL', {}).get('DFT', {})


def _section_on(section: Any) -> bool:
    """Whether a CP2K section given as a dict is switched on (``_`` absent or a true value)."""
    if not isinstance(section, Mapping):
        return False
    flag = section.get('_', True)
    return str(flag).upper() not in ('OFF', 'F', 'FALSE', '.FALSE.', 'NO', '0')


def _kinds(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return ``{kind name: KIND section}`` of CP2K parameters."""
    kinds = parameters.get('FORCE_EVAL', {}).get('SUBSYS', {}).get('KIND', [])
    kinds = [kinds] if isinstance(kinds, Mapping) else kinds
    return {str(kind['_']): dict(kind) for kind in kinds}


def _element(name: str, kind: Mapping[str, Any]) -> str:
    """Element of a KIND section: its ELEMENT keyword, else the kind name without trailing digits."""
    return str(kind.get('ELEMENT', name.rstrip('0123456789')))


def is_xtb(parameters: Mapping[str, Any]) -> bool:
    """Whether the CP2K parameters ask for xTB (``FORCE_EVAL/DFT/QS/METHOD xTB``)."""
    return str(_dft(parameters).get('QS', {}).get('METHOD', 'GPW')).upper() == 'XTB'


def get_level_of_theory(parameters: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Return the level of theory of labels computed with CP2K ``parameters`` by CP2K ``version``.

    Only settings that define the converged result are recorded: method, basis and pseudopotential per
    element, XC functional, plane-wave cutoffs (Ry), smearing (method, electronic temperature in K), Ewald
    for xTB, total charge, k-points (always Γ here). Solver settings (mixing, OT, MAX_SCF, ADDED_MOS,
    EPS_SCF) are left out, so frames of systems of different sizes and SCF settings stay mergeable;
    the restart handlers therefore never change a recorded setting.
    """
    dft = _dft(parameters)
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
            if _section_on(smear)
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
                _element(name, kind): kind.get('BASIS_SET') for name, kind in _kinds(parameters).items()
            },
            'pseudopotential': {
                _element(name, kind): kind.get('POTENTIAL') for name, kind in _kinds(parameters).items()
            },
            'cutoff': mgrid.get('CUTOFF'),
            'rel_cutoff': mgrid.get('REL_CUTOFF'),
        }
    )
    return {'engine': 'cp2k', 'method': functional.upper(), 'version': version, 'settings': settings}


def check_structure(atoms: Any, min_distance: float = MIN_INTERATOMIC_DISTANCE) -> str | None:
    """Return an error message if two atoms (periodic images included) are closer than ``min_distance`` Å."""
    first, second, distances = neighbor_list('ijd', atoms, min_distance)
    if len(distances):
        index = int(np.argmin(distances))
        return (
            f'atoms {first[index]} and {second[index]} are {distances[index]:.3f} Å apart '
            f'(minimum {min_distance} Å): overlapping atoms'
        )
    if not atoms.pbc.all():
        return 'the structure must be periodic in 3D'
    return None


def validate_cp2k_inputs(parameters: Mapping[str, Any], kinds: Mapping[str, str]) -> str | None:
    """Return an error message if CP2K ``parameters`` cannot label a structure with ``kinds``.

    ``kinds`` maps the structure's kind names to element symbols. For GPW every kind needs a KIND section
    with BASIS_SET and POTENTIAL, and MGRID cutoffs must be positive; xTB needs known elements only.
    Only the Gamma point is supported (the level of theory records it).
    """
    unknown = sorted({element for element in kinds.values() if element not in atomic_numbers})
    if unknown:
        return f'unknown elements {unknown}'
    if 'KPOINTS' in _dft(parameters):
        return 'k-point sampling is not supported: the labels record the Gamma point only'
    if is_xtb(parameters):
        return None
    sections = _kinds(parameters)
    missing = sorted(
        {
            element
            for name, element in kinds.items()
            if not (sections.get(name, {}).get('BASIS_SET') and sections.get(name, {}).get('POTENTIAL'))
        }
    )
    if missing:
        return f'no basis set or pseudopotential for {missing}: add a KIND section for each'
    mgrid = _dft(parameters).get('MGRID', {})
    for key in ('CUTOFF', 'REL_CUTOFF'):
        value = mgrid.get(key)
        if value is not None and not (isinstance(value, int | float) and value > 0):
            return f'MGRID/{key} must be a positive number of Ry, got {value!r}'
    return None


def structure_kinds(structure: orm.StructureData) -> dict[str, str]:
    """Return ``{kind name: element symbol}`` of ``structure`` (kind names as written by aiida-cp2k)."""
    return {kind.name: kind.symbol for kind in structure.kinds}


def check_label_and_tags(system_label: str, tags: Mapping[str, Any] | None) -> str | None:
    """Return TrainingSetData's error message for this system label and these frame tags, or ``None``."""
    try:
        FrameSystem(
            system_label, [0], np.zeros((1, 1, 3)), np.eye(3)[None], [0.0], np.zeros((1, 1, 3)), tags=tags
        )
    except TrainingSetError as exception:
        return str(exception)
    return None


def classify_composition(elements: set[str]) -> str:
    """Return ``'metal'`` if all ``elements`` are metals (e.g. pure Li), else ``'insulator'``."""
    return 'insulator' if elements & NON_METALS else 'metal'


def scale_with_size(parameters: dict[str, Any], natoms: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Set MAX_SCF and (with smearing) ADDED_MOS from the system size, unless already set; return a copy."""
    parameters = copy.deepcopy(parameters)
    scf = parameters['FORCE_EVAL']['DFT'].setdefault('SCF', {})
    scf.setdefault('MAX_SCF', max(meta['max_scf_min'], math.ceil(meta['max_scf_per_atom'] * natoms)))
    if _section_on(scf.get('SMEAR')):
        scf.setdefault(
            'ADDED_MOS', max(meta['added_mos_min'], math.ceil(meta['added_mos_per_atom'] * natoms))
        )
    return parameters


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
# Port validators
# ----------------------------------------------------------------------------------------------------------


def _validate_structure(value: orm.StructureData, _ctx: Any) -> str | None:
    """Refuse overlapping atoms and non-periodic cells."""
    return check_structure(value.get_ase())


def _validate_inputs(inputs: Mapping[str, Any], _ctx: Any) -> str | None:
    """Check the CP2K parameters against the structure's elements, and the system label and tags."""
    if 'structure' in inputs and 'cp2k' in inputs and 'parameters' in inputs['cp2k']:
        kinds = structure_kinds(inputs['structure'])
        message = validate_cp2k_inputs(inputs['cp2k']['parameters'].get_dict(), kinds)
        if message:
            return message
    if 'system_label' in inputs:
        tags = inputs['tags'].get_dict() if 'tags' in inputs else None
        return check_label_and_tags(inputs['system_label'].value, tags)
    return None


# ----------------------------------------------------------------------------------------------------------
# Work chain
# ----------------------------------------------------------------------------------------------------------


class Cp2kLabelWorkChain(LiseiBaseRestartWorkChain):
    """Label one structure with CP2K (energy eV, forces eV/Å, virial eV) and restart on recoverable errors."""

    _process_class = Cp2kCalculation
    _protocol_file = 'cp2k_label'

    #: Tuning constants of the handlers.
    defaults = AttributeDict(
        {
            'max_scf_restarts': 2,
            'max_scf_floor': 100,
            'max_scf_cap': 2000,
            'mixing_alpha_factor': 0.5,
            'mixing_alpha_min': 0.05,
            'added_mos_factor': 1.5,
            'walltime_factor': 1.5,
            'max_wallclock_seconds_cap': 86400,
            'walltime_fraction': 0.9,
        }
    )

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.expose_inputs(Cp2kCalculation, namespace='cp2k', exclude=('structure', 'trajectory', 'kpoints'))
        spec.input(
            'structure',
            valid_type=orm.StructureData,
            validator=_validate_structure,
            help='Structure to label (Å).',
        )
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
        spec.inputs.validator = _validate_inputs
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(
                cls.run_process,
                cls.inspect_process,
            ),
            cls.results,
            cls.create_labels,
        )
        spec.output('output_parameters', valid_type=orm.Dict, help='Energy (eV), SCF info, CP2K version.')
        spec.output('forces', valid_type=orm.ArrayData, help='Forces (eV/Å), array `forces`.')
        spec.output(
            'stress',
            valid_type=orm.ArrayData,
            required=False,
            help='Stress (eV/Å³, ASE sign), array `stress`.',
        )
        spec.output('labels', valid_type=TrainingSetData, help='One labelled frame (DeePMD units and signs).')
        spec.exit_code(
            410,
            'ERROR_SCF_NOT_CONVERGED',
            message='The SCF did not converge after {restarts} restarts with gentler solver settings.',
        )
        spec.exit_code(
            420,
            'ERROR_WALLTIME_CAP_REACHED',
            message='CP2K ran out of walltime with max_wallclock_seconds already at the cap ({cap} s).',
        )

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
        protocol = cls._resolve_protocol(protocol, elements)
        inputs = cls.get_protocol_inputs(protocol, overrides)
        kinds = structure_kinds(structure)
        parameters = _add_kinds(inputs['cp2k']['parameters'], inputs.get('kinds', {}), kinds)
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

    @classmethod
    def _resolve_protocol(cls, protocol: str | None, elements: set[str]) -> str:
        """Return the concrete protocol (a ``select_by_composition`` entry picks metal or insulator)."""
        data = cls._load_protocol_file()
        protocol = protocol or data['default_protocol']
        choices = data['protocols'].get(protocol, {}).get('select_by_composition')
        return choices[classify_composition(elements)] if choices else protocol

    def setup(self):
        """Collect the CalcJob inputs and make CP2K stop on its own before the scheduler's walltime."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(Cp2kCalculation, 'cp2k'))
        self.ctx.inputs.structure = self.inputs.structure
        self.ctx.inputs.metadata = AttributeDict(copy.deepcopy(dict(self.ctx.inputs.get('metadata', {}))))
        self.ctx.scf_restarts = 0
        self._set_walltime(self.ctx.inputs.metadata.get('options', {}).get('max_wallclock_seconds'))

    def _set_walltime(self, seconds: int | None) -> None:
        """Set ``max_wallclock_seconds`` and CP2K's ``GLOBAL/WALLTIME`` (a fraction of it, s)."""
        if seconds is None:
            return
        self.ctx.inputs.metadata.setdefault('options', {})['max_wallclock_seconds'] = int(seconds)
        parameters = self.ctx.inputs.parameters.get_dict()
        walltime = int(self.defaults.walltime_fraction * seconds)
        if parameters.get('GLOBAL', {}).get('WALLTIME') != walltime:
            parameters.setdefault('GLOBAL', {})['WALLTIME'] = walltime
            self.ctx.inputs.parameters = orm.Dict(parameters)

    def results(self):
        """Attach the parsed outputs of the last CalcJob."""
        node = self.ctx.children[self.ctx.iteration - 1]
        self.report(f'work chain completed after {self.ctx.iteration} iterations')
        for name in ('output_parameters', 'forces', 'stress'):
            if name in node.outputs:
                self.out(name, node.outputs[name])

    def create_labels(self):
        """Build the one-frame training set from the last CalcJob through a calcfunction."""
        node = self.ctx.children[self.ctx.iteration - 1]
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

    @process_handler(priority=500, exit_codes=[Cp2kCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, calculation):
        """Resubmit with ``walltime_factor`` times more walltime, up to ``max_wallclock_seconds_cap``.

        A single point has nothing worth restarting from; if the walltime is already at the cap, give up
        with ``ERROR_WALLTIME_CAP_REACHED``.
        """
        cap = self.defaults.max_wallclock_seconds_cap
        seconds = calculation.get_option('max_wallclock_seconds') or cap
        if seconds >= cap:
            self.report_error_handled(calculation, f'walltime already at the cap of {cap} s: giving up')
            return ProcessHandlerReport(True, self.exit_codes.ERROR_WALLTIME_CAP_REACHED.format(cap=cap))
        new_seconds = min(cap, math.ceil(self.defaults.walltime_factor * seconds))
        self._set_walltime(new_seconds)
        self.report_error_handled(
            calculation, f'handle_out_of_walltime: max_wallclock_seconds {seconds} -> {new_seconds} s'
        )
        return ProcessHandlerReport(True)

    @process_handler(priority=410, exit_codes=[Cp2kCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED])
    def handle_scf_not_converged(self, calculation):
        """Restart with more SCF steps and gentler solver settings, at most ``max_scf_restarts`` times.

        Each restart: MAX_SCF doubled (at least ``max_scf_floor``, at most ``max_scf_cap``); with density
        mixing the mixing ALPHA multiplied by ``mixing_alpha_factor`` (not below ``mixing_alpha_min``);
        with smearing ADDED_MOS multiplied by ``added_mos_factor``; with OT the CG minimizer. Smearing,
        cutoffs and basis are never changed: they are part of the labels' level of theory.
        """
        if self.ctx.scf_restarts >= self.defaults.max_scf_restarts:
            self.report_error_handled(
                calculation, f'SCF still not converged after {self.ctx.scf_restarts} restarts'
            )
            return ProcessHandlerReport(
                True, self.exit_codes.ERROR_SCF_NOT_CONVERGED.format(restarts=self.ctx.scf_restarts)
            )
        parameters, changes = gentler_scf(self.ctx.inputs.parameters.get_dict(), self.defaults)
        self.ctx.inputs.parameters = orm.Dict(parameters)
        self.ctx.scf_restarts += 1
        self.report_error_handled(
            calculation, f'handle_scf_not_converged, restart {self.ctx.scf_restarts}: {", ".join(changes)}'
        )
        return ProcessHandlerReport(True)


def gentler_scf(parameters: dict[str, Any], defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return CP2K parameters with gentler SCF solver settings and the list of changes (see the handler)."""
    parameters = copy.deepcopy(parameters)
    scf = parameters['FORCE_EVAL']['DFT'].setdefault('SCF', {})
    changes = []
    max_scf = scf.get('MAX_SCF', 50)
    scf['MAX_SCF'] = min(defaults['max_scf_cap'], max(2 * max_scf, defaults['max_scf_floor']))
    changes.append(f'MAX_SCF {max_scf} -> {scf["MAX_SCF"]}')
    if _section_on(scf.get('OT')):
        scf['OT']['MINIMIZER'] = 'CG'
        changes.append('OT MINIMIZER CG')
    elif isinstance(scf.get('MIXING'), Mapping):
        alpha = scf['MIXING'].get('ALPHA', 0.4)
        scf['MIXING']['ALPHA'] = max(defaults['mixing_alpha_min'], alpha * defaults['mixing_alpha_factor'])
        changes.append(f'mixing ALPHA {alpha} -> {scf["MIXING"]["ALPHA"]:g}')
    if _section_on(scf.get('SMEAR')) and 'ADDED_MOS' in scf:
        added_mos = scf['ADDED_MOS']
        scf['ADDED_MOS'] = math.ceil(defaults['added_mos_factor'] * added_mos)
        changes.append(f'ADDED_MOS {added_mos} -> {scf["ADDED_MOS"]}')
    return parameters, changes


def _add_kinds(
    parameters: dict[str, Any], kinds: Mapping[str, Mapping[str, Any]], structure: Mapping[str, str]
) -> dict[str, Any]:
    """Return a copy of ``parameters`` with a KIND section per kind of ``structure`` whose element the
    protocol's ``kinds`` defines (unless the parameters already have KIND sections)."""
    parameters = copy.deepcopy(parameters)
    if not kinds:
        return parameters
    present = [
        {'_': name, 'ELEMENT': element, **kinds[element]}
        for name, element in sorted(structure.items())
        if element in kinds
    ]
    parameters['FORCE_EVAL'].setdefault('SUBSYS', {}).setdefault('KIND', present)
    return parameters
