"""``lisei.cp2k.base``: one CP2K CalcJob, restarted on its recoverable failures (the CP2K work chains' base).

As aiida-quantumespresso's ``PwBaseWorkChain`` serves ``PwRelaxWorkChain``, this work chain serves
``lisei.cp2k.label`` (a single point) and ``lisei.cp2k.md`` (a relaxation or an MD run), which run it
through ``expose_inputs``: it owns the CP2K input rules (KIND sections, sizes, checks), the protocols'
FORCE_EVAL (``protocols/cp2k.yaml``), the walltime of CP2K (``GLOBAL/WALLTIME``, a fraction of the
scheduler's) and the restart handlers, tuned by :attr:`Cp2kBaseWorkChain.defaults`:

* out of walltime: an MD run continues from the last restart file (``EXT_RESTART``), a relaxation from its
  last geometry; a single point (or a run stopped before its first restart file) is resubmitted with more
  walltime, up to a cap (then 520);
* SCF not converged: restart from the start with gentler solver settings (then 411);
* optimisation not converged in ``MAX_ITER``: the outputs are attached and the work chain stops with 410.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.common.links import LinkType
from aiida.engine import ExitCode, ProcessHandlerReport, process_handler, while_
from aiida.plugins import CalculationFactory
from ase.data import atomic_numbers

from aiida_lisei.science.geometry import MIN_INTERATOMIC_DISTANCE, close_contact
from aiida_lisei.workchains.restart import LiseiBaseRestartWorkChain

__all__ = (
    'NON_METALS',
    'RESTART_FILE',
    'Cp2kBaseWorkChain',
    'add_kinds',
    'calculations',
    'check_structure',
    'classify_composition',
    'cp2k_exit_code',
    'define_cp2k_exit_codes',
    'dft_section',
    'gentler_scf',
    'is_xtb',
    'kind_element',
    'kind_sections',
    'scale_with_size',
    'section_on',
    'structure_kinds',
    'validate_cp2k_inputs',
    'validate_inputs',
    'validate_structure',
)

Cp2kCalculation = CalculationFactory('cp2k')

#: Elements counted as non-metals when a ``select_by_composition`` protocol picks metal or insulator settings.
NON_METALS = frozenset(
    'H He B C N O F Ne Si P S Cl Ar Ge As Se Br Kr Sb Te I Xe At Rn'.split()  # noqa: SIM905
)

#: The file an MD run continues from after a walltime stop (in the parent folder).
RESTART_FILE = f'parent_calc/{Cp2kCalculation._DEFAULT_RESTART_FILE_NAME}'


# ----------------------------------------------------------------------------------------------------------
# CP2K inputs (pure helpers, no database access)
# ----------------------------------------------------------------------------------------------------------


def dft_section(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``FORCE_EVAL/DFT`` of CP2K parameters (``{}`` if absent)."""
    return parameters.get('FORCE_EVAL', {}).get('DFT', {})


def section_on(section: Any) -> bool:
    """Whether a CP2K section given as a dict is switched on (``_`` absent or a true value)."""
    if not isinstance(section, Mapping):
        return False
    flag = section.get('_', True)
    return str(flag).upper() not in ('OFF', 'F', 'FALSE', '.FALSE.', 'NO', '0')


def kind_sections(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return ``{kind name: KIND section}`` of CP2K parameters."""
    kinds = parameters.get('FORCE_EVAL', {}).get('SUBSYS', {}).get('KIND', [])
    kinds = [kinds] if isinstance(kinds, Mapping) else kinds
    return {str(kind['_']): dict(kind) for kind in kinds}


def kind_element(name: str, kind: Mapping[str, Any]) -> str:
    """Element of a KIND section: its ELEMENT keyword, else the kind name without trailing digits."""
    return str(kind.get('ELEMENT', name.rstrip('0123456789')))


def is_xtb(parameters: Mapping[str, Any]) -> bool:
    """Whether the CP2K parameters ask for xTB (``FORCE_EVAL/DFT/QS/METHOD xTB``)."""
    return str(dft_section(parameters).get('QS', {}).get('METHOD', 'GPW')).upper() == 'XTB'


def check_structure(atoms: Any, min_distance: float = MIN_INTERATOMIC_DISTANCE) -> str | None:
    """Return an error message if two atoms (periodic images included) are closer than ``min_distance`` Å."""
    contact = close_contact(atoms, min_distance)
    if contact is not None:
        first, second, distance, _ = contact
        apart = f'atoms {first} and {second} are {distance:.3f} Å apart'
        return f'{apart} (minimum {min_distance} Å): overlapping atoms'
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
    if 'KPOINTS' in dft_section(parameters):
        return 'k-point sampling is not supported: the labels record the Gamma point only'
    if is_xtb(parameters):
        return None
    sections = kind_sections(parameters)
    missing = sorted(
        {
            element
            for name, element in kinds.items()
            if not (sections.get(name, {}).get('BASIS_SET') and sections.get(name, {}).get('POTENTIAL'))
        }
    )
    if missing:
        return f'no basis set or pseudopotential for {missing}: add a KIND section for each'
    mgrid = dft_section(parameters).get('MGRID', {})
    for key in ('CUTOFF', 'REL_CUTOFF'):
        value = mgrid.get(key)
        if value is not None and not (isinstance(value, int | float) and value > 0):
            return f'MGRID/{key} must be a positive number of Ry, got {value!r}'
    return None


def structure_kinds(structure: orm.StructureData) -> dict[str, str]:
    """Return ``{kind name: element symbol}`` of ``structure`` (kind names as written by aiida-cp2k)."""
    return {kind.name: kind.symbol for kind in structure.kinds}


def classify_composition(elements: set[str]) -> str:
    """Return ``'metal'`` if all ``elements`` are metals (e.g. pure Li), else ``'insulator'``."""
    return 'insulator' if elements & NON_METALS else 'metal'


def scale_with_size(parameters: dict[str, Any], natoms: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Set MAX_SCF and (with smearing) ADDED_MOS from the system size, unless already set; return a copy."""
    parameters = copy.deepcopy(parameters)
    scf = parameters['FORCE_EVAL']['DFT'].setdefault('SCF', {})
    scf.setdefault('MAX_SCF', max(meta['max_scf_min'], math.ceil(meta['max_scf_per_atom'] * natoms)))
    if section_on(scf.get('SMEAR')):
        scf.setdefault(
            'ADDED_MOS', max(meta['added_mos_min'], math.ceil(meta['added_mos_per_atom'] * natoms))
        )
    return parameters


def gentler_scf(parameters: dict[str, Any], defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return CP2K parameters with gentler SCF solver settings and the list of changes (see the handler)."""
    parameters = copy.deepcopy(parameters)
    scf = parameters['FORCE_EVAL']['DFT'].setdefault('SCF', {})
    changes = []
    max_scf = scf.get('MAX_SCF', 50)
    scf['MAX_SCF'] = min(defaults['max_scf_cap'], max(2 * max_scf, defaults['max_scf_floor']))
    changes.append(f'MAX_SCF {max_scf} -> {scf["MAX_SCF"]}')
    if section_on(scf.get('OT')):
        scf['OT']['MINIMIZER'] = 'CG'
        changes.append('OT MINIMIZER CG')
    elif isinstance(scf.get('MIXING'), Mapping):
        alpha = scf['MIXING'].get('ALPHA', 0.4)
        scf['MIXING']['ALPHA'] = max(defaults['mixing_alpha_min'], alpha * defaults['mixing_alpha_factor'])
        changes.append(f'mixing ALPHA {alpha} -> {scf["MIXING"]["ALPHA"]:g}')
    if section_on(scf.get('SMEAR')) and 'ADDED_MOS' in scf:
        added_mos = scf['ADDED_MOS']
        scf['ADDED_MOS'] = math.ceil(defaults['added_mos_factor'] * added_mos)
        changes.append(f'ADDED_MOS {added_mos} -> {scf["ADDED_MOS"]}')
    return parameters, changes


def add_kinds(
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


def validate_structure(value: orm.StructureData, _ctx: Any = None) -> str | None:
    """Port validator: refuse overlapping atoms and non-periodic cells."""
    return check_structure(value.get_ase())


def validate_inputs(inputs: Mapping[str, Any], _ctx: Any = None) -> str | None:
    """Check the CP2K parameters against the structure's elements (also the validator of the work chains
    that expose these inputs)."""
    if 'structure' in inputs and 'cp2k' in inputs and 'parameters' in inputs['cp2k']:
        kinds = structure_kinds(inputs['structure'])
        return validate_cp2k_inputs(inputs['cp2k']['parameters'].get_dict(), kinds)
    return None


# ----------------------------------------------------------------------------------------------------------
# Work chain
# ----------------------------------------------------------------------------------------------------------


def define_cp2k_exit_codes(spec: Any, passed_on: tuple[str, ...]) -> None:
    """Declare, on the spec of a work chain that runs ``lisei.cp2k.base``, the base's exit codes
    ``passed_on`` (same label, number and message) and 521 for any other failure of the base."""
    base = Cp2kBaseWorkChain.spec().exit_codes
    for label in passed_on:
        spec.exit_code(base[label].status, label, message=base[label].message)
    spec.exit_code(521, 'ERROR_SUB_PROCESS_FAILED_CP2K', message='The CP2K run {process} failed: {message}')


def cp2k_exit_code(node: orm.WorkflowNode, exit_codes: Any, passed_on: tuple[str, ...]) -> ExitCode | None:
    """The exit code of a work chain whose ``lisei.cp2k.base`` run ``node`` ended: ``None`` if it finished
    ok, its own exit code (message as it is) if it is one of ``passed_on``, else 521."""
    if node.is_finished_ok:
        return None
    if node.exit_status in {exit_codes[label].status for label in passed_on}:
        return ExitCode(node.exit_status, node.exit_message)
    return exit_codes.ERROR_SUB_PROCESS_FAILED_CP2K.format(
        process=f'{node.process_label}<{node.pk}>', message=f'[{node.exit_status}] {node.exit_message}'
    )


def calculations(node: orm.WorkflowNode) -> list[orm.CalcJobNode]:
    """The CalcJobs that the ``lisei.cp2k.base`` run ``node`` called, oldest first."""
    return sorted(
        (child for child in node.called if isinstance(child, orm.CalcJobNode)), key=lambda child: child.ctime
    )


class Cp2kBaseWorkChain(LiseiBaseRestartWorkChain):
    """Run one CP2K calculation, restarting it on walltime, SCF and optimisation failures."""

    _process_class = Cp2kCalculation
    _protocol_file = 'cp2k'

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
        spec.expose_inputs(
            Cp2kCalculation,
            namespace='cp2k',
            exclude=('structure', 'trajectory', 'kpoints'),
            namespace_options={'help': "Inputs of the `cp2k` CalcJob: `parameters` is CP2K's input."},
        )
        spec.input(
            'structure', valid_type=orm.StructureData, validator=validate_structure, help='Structure (Å).'
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(
                cls.run_process,
                cls.inspect_process,
            ),
            cls.results,
        )
        spec.outputs.dynamic = True
        spec.exit_code(
            410, 'ERROR_RELAX_NOT_CONVERGED', message='The relaxation did not converge in `max_steps` steps.'
        )
        spec.exit_code(
            411,
            'ERROR_SCF_NOT_CONVERGED',
            message='The SCF did not converge after {restarts} restarts with gentler solver settings.',
        )
        spec.exit_code(
            520,
            'ERROR_WALLTIME_CAP_REACHED',
            message='CP2K ran out of walltime with max_wallclock_seconds already at the cap ({cap} s).',
        )

    @classmethod
    def selects_by_composition(cls, protocol: str) -> bool:
        """Whether ``protocol`` picks metal or insulator settings (``select_by_composition``)."""
        return 'select_by_composition' in cls._load_protocol_file()['protocols'][protocol]

    @classmethod
    def resolve_protocol(cls, protocol: str | None, elements: set[str]) -> str:
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

    def _run_type(self) -> str:
        """CP2K's ``GLOBAL/RUN_TYPE`` of the runs (``ENERGY_FORCE`` if not given)."""
        return str(self.ctx.inputs.parameters.get_dict().get('GLOBAL', {}).get('RUN_TYPE', 'ENERGY_FORCE'))

    def results(self):
        """Attach every output of the last CalcJob."""
        node = self.ctx.children[self.ctx.iteration - 1]
        self.report(f'work chain completed after {self.ctx.iteration} iterations')
        for link in node.base.links.get_outgoing(link_type=LinkType.CREATE).all():
            if link.link_label not in self.outputs:
                self.out(link.link_label, link.node)

    @process_handler(
        priority=600, exit_codes=[Cp2kCalculation.exit_codes.ERROR_MAXIMUM_NUMBER_OPTIMIZATION_STEPS_REACHED]
    )
    def handle_relax_not_converged(self, calculation):
        """Stop with 410, the last structure and trajectory attached (the caller may go on from them)."""
        self.results()
        self.report_error_handled(calculation, 'relaxation not converged: last structure attached, giving up')
        return ProcessHandlerReport(True, self.exit_codes.ERROR_RELAX_NOT_CONVERGED)

    @process_handler(priority=500, exit_codes=[Cp2kCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, calculation):
        """Continue an MD from the last restart file (``EXT_RESTART``), a relaxation from its last geometry,
        a single point with ``walltime_factor`` times more walltime (up to ``max_wallclock_seconds_cap``).

        Without a restart file (stopped before it wrote one) the same inputs (an MD continuation keeps its
        parent folder) are resubmitted with more walltime too; at the cap: ``ERROR_WALLTIME_CAP_REACHED``.
        """
        run_type = self._run_type()
        if 'output_structure' in calculation.outputs and run_type in ('MD', 'GEO_OPT', 'CELL_OPT'):
            parameters = self.ctx.inputs.parameters.get_dict()
            if run_type == 'MD':
                parameters['EXT_RESTART'] = {'RESTART_FILE_NAME': RESTART_FILE}
                self.ctx.inputs.parent_calc_folder = calculation.outputs.remote_folder
                action = f'continuing the MD from {RESTART_FILE} of <{calculation.pk}>'
            else:
                self.ctx.inputs.structure = calculation.outputs.output_structure
                action = f'restarting the relaxation from the last geometry of <{calculation.pk}>'
            self.ctx.inputs.parameters = orm.Dict(parameters)
            self.report_error_handled(calculation, action)
            return ProcessHandlerReport(True)
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
        """Restart from the start with more SCF steps and gentler settings (``max_scf_restarts`` times).

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
        parameters.pop('EXT_RESTART', None)
        self.ctx.inputs.pop('parent_calc_folder', None)
        self.ctx.inputs.structure = self.inputs.structure
        self.ctx.inputs.parameters = orm.Dict(parameters)
        self.ctx.scf_restarts += 1
        self.report_error_handled(
            calculation, f'handle_scf_not_converged, restart {self.ctx.scf_restarts}: {", ".join(changes)}'
        )
        return ProcessHandlerReport(True)
