"""``lisei.electronic_structure``: DP relaxation, DOS and band gap of SEI and bulk (paper §3, Fig. 4d).

The chain of processes, per structure (``structures.bulk``, ``structures.sei``, ``structures.li2s``, ...):

``lisei.dp_minimize`` (optional: LAMMPS + DeePMD minimisation, the cell too if asked, as the paper relaxes the
SEI with its DP) → ``lisei.cp2k.base`` (a CP2K ``ENERGY`` single point with the ``&PDOS`` and ``&MO`` prints,
parsed by ``lisei.cp2k.es``: orbital energies, occupations, element projections) →
:func:`electronic_properties` (the gap with how it was determined, the Fermi level, the DOS total and per
element) → :func:`summarise_electronic_structure` (our gaps beside the paper's and the DOS figure like
Fig. 4d: bulk above, SEI below).

Engine: CP2K (``engine = 'cp2k'``) with GFN1-xTB (protocol ``demo``) or PBE (protocol ``pbe``), Gamma point
only (recorded in every gap). GFN1-xTB gaps are *not* PBE gaps: every output says so
(``level_of_theory_label``) and the comparison refuses to call them agreeing with the paper's PBE numbers.
The paper's own engine, VASP (protocol ``paper``: PBE, 600 eV, Gamma-centred k 1x1x3 for the SEI), runs
through aiida-vasp's ``vasp.vasp``; the orbitals of every k-point are read from its ``vasprun.xml``.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping
from typing import Any

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, ToContext, WorkChain, calcfunction, if_
from aiida.plugins import WorkflowFactory

from aiida_lisei.calculations.dp_minimize import DpMinimizeCalculation
from aiida_lisei.formats.lammps import check_minimize_parameters
from aiida_lisei.formats.vasp import VaspOutputError, parse_vasprun_electronic, vasp_method
from aiida_lisei.protocols import ProtocolMixin
from aiida_lisei.protocols.utils import recursive_merge
from aiida_lisei.reporting.comparisons import band_gap_comparison
from aiida_lisei.reporting.plots import DosPanel, dos_png
from aiida_lisei.reporting.tables import format_band_gap_table
from aiida_lisei.science.electronic import band_gap, check_dos_parameters, density_of_states
from aiida_lisei.workchains.cp2k_base import (
    Cp2kBaseWorkChain,
    add_kinds,
    calculations,
    check_structure,
    cp2k_exit_code,
    define_cp2k_exit_codes,
    scale_with_size,
    structure_kinds,
    validate_cp2k_inputs,
)
from aiida_lisei.workchains.cp2k_label import get_level_of_theory

__all__ = (
    'ENGINES',
    'ElectronicStructureWorkChain',
    'electronic_properties',
    'es_cp2k_parameters',
    'level_of_theory_label',
    'sei_electronic_structure_builder',
    'summarise_electronic_structure',
    'vasp_electronic_properties',
)

VaspWorkChain = WorkflowFactory('vasp.vasp')

#: Engines of the work chain.
ENGINES = ('cp2k', 'vasp')
#: What the VASP runs must keep: ``vasprun.xml`` in ``retrieved`` (the orbitals and DOS are read from it).
VASP_RETRIEVE = 'vasprun.xml'
#: Failures of ``lisei.cp2k.base`` passed on with their label and number.
PASSED_ON = ('ERROR_SCF_NOT_CONVERGED', 'ERROR_WALLTIME_CAP_REACHED')
#: CP2K prints of an electronic-structure single point: all orbitals with their element projections
#: (``&PDOS NLUMO -1``: every unoccupied orbital of the basis), the Fermi level and CP2K's own gap (``&MO``).
ES_PRINT: dict[str, Any] = {
    'PDOS': {'NLUMO': -1, 'COMPONENTS': False},
    'MO': {
        'EIGENVALUES': True,
        'OCCUPATION_NUMBERS': True,
        'NDIGITS': 8,
        'EACH': {'QS_SCF': 0},
        'ADD_LAST': 'NUMERIC',
    },
}
#: Order of the DOS panels in the figure (Fig. 4d: bulk above, SEI below); other keys follow, sorted.
PANEL_ORDER = ('bulk', 'sei', 'li2s')


def level_of_theory_label(method: str) -> str:
    """The label every gap carries: ``PBE``, or e.g. ``GFN1-xTB, not PBE``."""
    return method if method.upper() == 'PBE' else f'{method}, not PBE'


def es_cp2k_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return CP2K ``parameters`` turned into an electronic-structure single point (a copy).

    ``RUN_TYPE ENERGY``, no forces or stress, :data:`ES_PRINT` under ``FORCE_EVAL/DFT/PRINT``.
    """
    parameters = copy.deepcopy(dict(parameters))
    parameters.setdefault('GLOBAL', {})['RUN_TYPE'] = 'ENERGY'
    force_eval = parameters.setdefault('FORCE_EVAL', {})
    force_eval.pop('STRESS_TENSOR', None)
    force_eval.pop('PRINT', None)
    dft = force_eval.setdefault('DFT', {})
    dft['PRINT'] = recursive_merge(dft.get('PRINT', {}), ES_PRINT)
    return parameters


@calcfunction
def electronic_properties(
    eigenvalues: orm.ArrayData, output_parameters: orm.Dict, parameters: orm.Dict, dos_parameters: orm.Dict
) -> dict[str, orm.Data]:
    """Gap and DOS of one single point (eV, states/eV per cell).

    :param eigenvalues: ``energies`` (eV), ``occupations`` (0-2), ``weights_<element>`` (``lisei.cp2k.es``).
    :param output_parameters: the parser's ``fermi_energy`` (eV), ``cp2k_band_gap`` (eV), ``cp2k_version``.
    :param parameters: the CP2K input (gives the level of theory: method, smearing, Gamma point).
    :param dos_parameters: :data:`~aiida_lisei.science.electronic.DEFAULT_DOS_PARAMETERS` (missing: defaults).
    :return: ``gap`` (``Dict``: ``gap``, ``homo``, ``lumo``, ``fermi_energy`` eV, ``metallic``, ``method``
        (how the gap was determined), ``level_of_theory``, ``level_of_theory_label``, ``kpoints``,
        ``smearing``, ``engine_band_gap``) and ``dos`` (``ArrayData``: ``energy`` eV, ``dos_total``,
        ``dos_<element>`` states/eV, attribute ``fermi_energy`` eV).
    """
    p = check_dos_parameters(dos_parameters.get_dict())
    energies = eigenvalues.get_array('energies')
    occupations = eigenvalues.get_array('occupations')
    gap = band_gap(energies, occupations, partial_tolerance=p['partial_tolerance'])
    level = get_level_of_theory(parameters.get_dict(), output_parameters['cp2k_version'])
    weights = {
        name.removeprefix('weights_'): eigenvalues.get_array(name)
        for name in eigenvalues.get_arraynames()
        if name.startswith('weights_')
    }
    arrays = density_of_states(energies, weights, p)
    dos = orm.ArrayData()
    for name, values in arrays.items():
        dos.set_array(name, values)
    fermi = output_parameters['fermi_energy']
    dos.base.attributes.set('fermi_energy', fermi)
    dos.base.attributes.set('units', {'energy': 'eV', 'dos': 'states/eV per cell (spin-summed)'})
    result = {
        **gap,
        'fermi_energy': fermi,
        'level_of_theory': level,
        'level_of_theory_label': level_of_theory_label(level['method']),
        'kpoints': level['settings']['kpoints'],
        'smearing': level['settings']['smearing'],
        'engine_band_gap': output_parameters.get('cp2k_band_gap'),
        'dos_parameters': p,
        'n_orbitals': len(energies),
        'units': {'energy': 'eV'},
    }
    return {'gap': orm.Dict(result), 'dos': dos}


@calcfunction
def vasp_electronic_properties(
    retrieved: orm.FolderData, incar: orm.Dict, dos_parameters: orm.Dict
) -> dict[str, orm.Data]:
    """Gap and DOS of one VASP run from its ``vasprun.xml`` (eV, states/eV per cell).

    The gap rule of :func:`~aiida_lisei.science.electronic.band_gap` over the orbitals of every k-point and
    spin (VASP's occupations are per spin channel: ``max_occupation`` 1); the DOS is VASP's own total DOS
    (its smearing and NEDOS grid; no per-element DOS without LORBIT).

    :return: ``gap`` (``Dict``, as :func:`electronic_properties`, ``kpoints`` the k-point count) and ``dos``
        (``ArrayData``: ``energy`` eV, ``dos_total`` states/eV, attribute ``fermi_energy`` eV).
    """
    p = check_dos_parameters(dos_parameters.get_dict())
    data = parse_vasprun_electronic(retrieved.base.repository.get_object_content(VASP_RETRIEVE))
    gap = band_gap(
        data['eigenvalues'].ravel(),
        data['occupations'].ravel(),
        max_occupation=1.0,
        partial_tolerance=p['partial_tolerance'],
    )
    incar_tags = {key.lower(): value for key, value in incar.get_dict().items()}
    method = vasp_method(incar_tags)
    dos = orm.ArrayData()
    dos.set_array('energy', data['dos']['energy'])
    dos.set_array('dos_total', data['dos']['total'])
    dos.base.attributes.set('fermi_energy', data['efermi'])
    dos.base.attributes.set('units', {'energy': 'eV', 'dos': 'states/eV per cell (spin-summed)'})
    result = {
        **gap,
        'fermi_energy': data['efermi'],
        'level_of_theory': {'engine': 'vasp', 'method': method, 'incar': incar.get_dict()},
        'level_of_theory_label': level_of_theory_label(method),
        'kpoints': f'{len(data["kpoint_weights"])} k-points',
        'smearing': {'ismear': data['ismear'], 'sigma': data['sigma']},
        'engine_band_gap': None,
        'dos_parameters': p,
        'n_orbitals': int(data['eigenvalues'].shape[-1]),
        'units': {'energy': 'eV'},
    }
    return {'gap': orm.Dict(result), 'dos': dos}


@calcfunction
def summarise_electronic_structure(**nodes: orm.Data) -> dict[str, orm.Data]:
    """Our gaps beside the paper's and the DOS figure; inputs ``<key>_gap`` (Dict) and ``<key>_dos``.

    :return: ``comparison`` (``Dict``: :func:`~aiida_lisei.reporting.comparisons.band_gap_comparison` plus
        the table as text) and ``dos_figure`` (``SinglefileData``, ``dos.png``: panels in the order bulk, SEI,
        Li2S, others).
    """
    keys = sorted({name.rsplit('_', 1)[0] for name in nodes})
    ordered = [key for key in PANEL_ORDER if key in keys] + [key for key in keys if key not in PANEL_ORDER]
    gaps = {
        key: {'gap': nodes[f'{key}_gap']['gap'], 'method': nodes[f'{key}_gap']['level_of_theory']['method']}
        for key in ordered
    }
    comparison = band_gap_comparison(gaps)
    comparison['table'] = format_band_gap_table(comparison)
    panels = []
    for key in ordered:
        gap, dos = nodes[f'{key}_gap'], nodes[f'{key}_dos']
        curves = {'total': dos.get_array('dos_total')}
        curves.update(
            {
                name.removeprefix('dos_'): dos.get_array(name)
                for name in dos.get_arraynames()
                if name.startswith('dos_') and name != 'dos_total'
            }
        )
        panels.append(
            DosPanel(
                title=key,
                energy=dos.get_array('energy'),
                dos=curves,
                fermi=float(gap['fermi_energy']),
                gap=float(gap['gap']),
                method=gap['level_of_theory_label'],
            )
        )
    figure = orm.SinglefileData(io.BytesIO(dos_png(panels)), filename='dos.png')
    return {'comparison': orm.Dict(comparison), 'dos_figure': figure}


def _validate_engine_inputs(
    engine: str, inputs: Mapping[str, Any], structures: Mapping[str, Any]
) -> str | None:
    """The chosen engine's namespace is there (``scf`` for CP2K; ``vasp`` and a k-point mesh per structure,
    with ``vasprun.xml`` retrieved, for VASP)."""
    if engine == 'cp2k':
        if 'code' not in inputs.get('scf', {}).get('cp2k', {}):
            return "engine 'cp2k' needs `scf.cp2k.code` (and its parameters): use get_builder_from_protocol"
        return None
    vasp = inputs.get('vasp', {})
    if 'code' not in vasp:
        return "engine 'vasp' needs the `vasp` inputs (code, parameters, potential family and mapping)"
    missing = sorted(set(structures) - set(inputs.get('kpoints', {})))
    if missing:
        return f"engine 'vasp' needs a k-point mesh in `kpoints` for {missing} (the paper: 1x1x3 for the SEI)"
    settings = vasp['settings'].get_dict() if 'settings' in vasp else {}
    if VASP_RETRIEVE not in settings.get('ADDITIONAL_RETRIEVE_LIST', []):
        return (
            f"add '{VASP_RETRIEVE}' to vasp.settings['ADDITIONAL_RETRIEVE_LIST'] (the orbitals come from it)"
        )
    return None


def validate_inputs(inputs: Mapping[str, Any], _ctx: Any = None) -> str | None:
    """Check the engine, the structures (periodic, no overlaps), the CP2K input and the relaxation choice."""
    engine = inputs['engine'].value if 'engine' in inputs else 'cp2k'
    if engine not in ENGINES:
        return f'engine `{engine}` is not available: choose one of {list(ENGINES)}'
    structures = inputs.get('structures', {})
    message = _validate_engine_inputs(engine, inputs, structures)
    if message:
        return message
    if not structures:
        return 'give at least one structure under `structures` (e.g. `bulk` and `sei`)'
    for key, structure in structures.items():
        if '_' in key:
            return f'structure key `{key}`: use letters and digits only (no underscore)'
        message = check_structure(structure.get_ase())
        if message:
            return f'structure `{key}`: {message}'
        if engine == 'cp2k' and 'parameters' in inputs.get('scf', {}).get('cp2k', {}):
            message = validate_cp2k_inputs(
                inputs['scf']['cp2k']['parameters'].get_dict(), structure_kinds(structure)
            )
            if message:
                return f'structure `{key}`: {message}'
    relax = inputs.get('relax_structures')
    if relax is not None:
        unknown = sorted(set(relax.get_list()) - set(structures))
        if unknown:
            return f'relax_structures {unknown} are not keys of `structures` {sorted(structures)}'
        if relax.get_list() and 'model' not in inputs.get('relax', {}):
            return 'relax_structures is given but `relax` has no model and code: add them or leave it out'
    return None


class ElectronicStructureWorkChain(ProtocolMixin, WorkChain):
    """DP relaxation (optional), CP2K single point, gap and DOS per structure; the paper's gaps beside."""

    _protocol_file = 'electronic_structure'

    @classmethod
    def define(cls, spec):
        """Define the process specification."""
        super().define(spec)
        spec.input_namespace(
            'structures',
            valid_type=orm.StructureData,
            dynamic=True,
            help='Structures by key (Å, 3D periodic): `bulk`, `sei`, `li2s`, ... (the figure stacks them).',
        )
        spec.input(
            'engine',
            valid_type=orm.Str,
            default=lambda: orm.Str('cp2k'),
            serializer=orm.to_aiida_type,
            help="Electronic-structure engine: 'cp2k' (GFN1-xTB or PBE, from the CP2K parameters).",
        )
        spec.input(
            'dos_parameters',
            valid_type=orm.Dict,
            default=lambda: orm.Dict({}),
            serializer=orm.to_aiida_type,
            help='DOS broadening sigma (eV), grid step and margin (eV), partial_tolerance of the gap rule.',
        )
        spec.input(
            'relax_structures',
            valid_type=orm.List,
            required=False,
            serializer=orm.to_aiida_type,
            help='Keys of the structures to relax with the DP first (default: all, when `relax` is given).',
        )
        spec.expose_inputs(
            DpMinimizeCalculation,
            namespace='relax',
            exclude=('structure',),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'DP relaxation inputs.',
            },
        )
        spec.expose_inputs(
            Cp2kBaseWorkChain,
            namespace='scf',
            exclude=('structure',),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': 'Inputs of `lisei.cp2k.base` (parser `lisei.cp2k.es`), engine cp2k.',
            },
        )
        spec.expose_inputs(
            VaspWorkChain,
            namespace='vasp',
            exclude=('structure', 'kpoints'),
            namespace_options={
                'required': False,
                'populate_defaults': False,
                'help': "Inputs of aiida-vasp's `vasp.vasp`, engine vasp (vasprun.xml retrieved).",
            },
        )
        spec.input_namespace(
            'kpoints',
            valid_type=orm.KpointsData,
            dynamic=True,
            required=False,
            help='VASP k-point mesh per structure key (engine vasp; paper: Gamma-centred 1x1x3 for the SEI).',
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.should_relax)(cls.run_relax, cls.inspect_relax),
            cls.run_scf,
            cls.inspect_scf,
            cls.summarise,
        )
        spec.output_namespace('relaxed_structures', valid_type=orm.StructureData, dynamic=True)
        spec.output_namespace('gaps', valid_type=orm.Dict, dynamic=True, help='Gap (eV), how, Fermi level.')
        spec.output_namespace(
            'dos', valid_type=orm.ArrayData, dynamic=True, help='DOS (states/eV) by element.'
        )
        spec.output_namespace('eigenvalues', valid_type=orm.ArrayData, dynamic=True, help='Orbital energies.')
        spec.output('comparison', valid_type=orm.Dict, help="Our gaps beside the paper's, with the table.")
        spec.output(
            'dos_figure', valid_type=orm.SinglefileData, help='DOS like Fig. 4d (bulk above, SEI below).'
        )
        spec.exit_code(501, 'ERROR_SUB_PROCESS_FAILED_RELAX', message='The relaxation of {systems} failed.')
        spec.exit_code(502, 'ERROR_ANALYSIS_FAILED', message='The gap or DOS of `{system}` failed: {message}')
        spec.exit_code(504, 'ERROR_VASP_FAILED', message='The VASP run {process} failed: {message}')
        spec.exit_code(
            503,
            'ERROR_RELAXATION_UNPHYSICAL',
            message='The DP relaxation of `{system}` gave an unphysical structure ({message}): the model '
            'does not describe it; use a model trained on such structures or leave the relaxation out.',
        )
        define_cp2k_exit_codes(spec, PASSED_ON)

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        structures: Mapping[str, orm.StructureData],
        *,
        potential_family: str | None = None,
        protocol: str | None = None,
        overrides: dict[str, Any] | None = None,
        lammps_code: orm.AbstractCode | None = None,
        model: orm.Data | None = None,
        relax_structures: list[str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ProcessBuilder:
        """Return a builder from a protocol (``demo``: CP2K GFN1-xTB; ``pbe``: CP2K PBE; ``paper``: VASP PBE
        with the SI's settings); nothing is stored.

        :param code: a code of the ``cp2k`` plugin, or of ``vasp.vasp`` for ``paper``.
        :param potential_family: the POTCAR family (``paper`` only).
        :param structures: ``{key: structure}``; e.g. ``bulk`` (Li6PS5Cl) and ``sei`` (from ``extract_sei``).
        :param overrides: nested dict merged over the protocol (``cp2k_protocol``, ``scf``, ``relax``,
            ``dos``).
        :param lammps_code: ``lmp`` with DeePMD (``lisei.dp_minimize``) and ``model``: relax with the DP
            first.
        :param relax_structures: keys to relax (default: all, when a model is given).
        :param options: scheduler options merged into the CP2K runs' options.
        :raises ValueError: bad structures or CP2K inputs.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.structures = dict(structures)
        builder.engine = orm.Str(inputs['engine'])
        builder.dos_parameters = orm.Dict(check_dos_parameters(inputs['dos']))
        cls._set_relaxation(builder, inputs, structures, lammps_code, model, relax_structures)
        if inputs['engine'] == 'vasp':
            cls._set_vasp(builder, inputs['vasp'], structures, code, potential_family, options)
            return builder
        cp2k_inputs = Cp2kBaseWorkChain.get_protocol_inputs(
            Cp2kBaseWorkChain.resolve_protocol(
                inputs['cp2k_protocol'],
                {site for structure in structures.values() for site in structure.get_symbols_set()},
            ),
            inputs.get('scf', {}),
        )
        kinds = {
            name: element
            for structure in structures.values()
            for name, element in structure_kinds(structure).items()
        }
        parameters = add_kinds(cp2k_inputs['cp2k']['parameters'], cp2k_inputs.get('kinds', {}), kinds)
        natoms = max(len(structure.sites) for structure in structures.values())
        parameters = es_cp2k_parameters(scale_with_size(parameters, natoms, cp2k_inputs['meta_parameters']))
        metadata = copy.deepcopy(cp2k_inputs['cp2k'].get('metadata', {}))
        metadata.setdefault('options', {}).update({'parser_name': 'lisei.cp2k.es', **(options or {})})
        builder.scf.cp2k.code = code
        builder.scf.cp2k.parameters = orm.Dict(parameters)
        builder.scf.cp2k.settings = orm.Dict({'additional_retrieve_list': ['*.pdos']})
        builder.scf.cp2k.metadata = metadata
        builder.scf.max_iterations = orm.Int(cp2k_inputs['max_iterations'])
        builder.scf.clean_workdir = orm.Bool(cp2k_inputs['clean_workdir'])
        return builder

    @staticmethod
    def _set_relaxation(
        builder: ProcessBuilder,
        inputs: Mapping[str, Any],
        structures: Mapping[str, orm.StructureData],
        lammps_code: orm.AbstractCode | None,
        model: orm.Data | None,
        relax_structures: list[str] | None,
    ) -> None:
        """Fill the ``relax`` namespace (a DP relaxation) when a model is given."""
        if model is None:
            return
        if lammps_code is None:
            raise ValueError('a DP relaxation needs `lammps_code` (lmp with DeePMD) besides `model`')
        builder.relax.code = lammps_code
        builder.relax.model = model
        builder.relax.parameters = orm.Dict(check_minimize_parameters(inputs['relax']['parameters']))
        builder.relax.metadata = copy.deepcopy(inputs['relax'].get('metadata', {}))
        builder.relax_structures = orm.List(list(relax_structures or structures))

    @staticmethod
    def _set_vasp(
        builder: ProcessBuilder,
        vasp: Mapping[str, Any],
        structures: Mapping[str, orm.StructureData],
        code: orm.AbstractCode,
        potential_family: str | None,
        options: dict[str, Any] | None,
    ) -> None:
        """Fill the ``vasp`` namespace and a k-point mesh per structure (``kpoints_mesh`` by key)."""
        if not potential_family:
            raise ValueError('the VASP engine needs `potential_family` (a POTCAR family uploaded to AiiDA)')
        meshes = vasp['kpoints_mesh']
        elements = {element for structure in structures.values() for element in structure.get_symbols_set()}
        builder.vasp.code = code
        builder.vasp.parameters = orm.Dict(copy.deepcopy(dict(vasp['parameters'])))
        builder.vasp.potential_family = orm.Str(potential_family)
        builder.vasp.potential_mapping = orm.Dict(
            {element: vasp['potential_mapping'].get(element, element) for element in sorted(elements)}
        )
        builder.vasp.options = orm.Dict({**vasp['options'], **(options or {})})
        builder.vasp.settings = orm.Dict(copy.deepcopy(dict(vasp['settings'])))
        builder.vasp.max_iterations = orm.Int(vasp['max_iterations'])
        builder.vasp.clean_workdir = orm.Bool(vasp['clean_workdir'])
        kpoints = {}
        for key in structures:
            node = orm.KpointsData()
            node.set_kpoints_mesh(list(meshes.get(key, meshes['default'])))
            kpoints[key] = node
        builder.kpoints = kpoints

    # -- outline steps ----------------------------------------------------------------------------------

    def setup(self):
        """Start from the input structures."""
        self.ctx.structures = dict(self.inputs.structures)

    def should_relax(self) -> bool:
        """Whether any structure is to be relaxed with the DP."""
        if 'model' not in self.inputs.get('relax', {}):
            return False
        keys = (
            self.inputs.relax_structures.get_list()
            if 'relax_structures' in self.inputs
            else list(self.ctx.structures)
        )
        self.ctx.relax_keys = keys
        return bool(keys)

    def run_relax(self):
        """Relax the chosen structures with the DP (``lisei.dp_minimize``), all at once."""
        calcs = {}
        for key in self.ctx.relax_keys:
            inputs = AttributeDict(self.exposed_inputs(DpMinimizeCalculation, 'relax'))
            inputs.structure = self.ctx.structures[key]
            inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': f'relax_{key}'}
            calcs[f'relax_{key}'] = self.submit(DpMinimizeCalculation, **inputs)
        return ToContext(**calcs)

    def inspect_relax(self):
        """Take the relaxed structures (7xx warnings accepted); 501: a relaxation failed, 503: overlaps."""
        failed = []
        for key in self.ctx.relax_keys:
            node = self.ctx[f'relax_{key}']
            warning = node.is_finished and node.exit_status is not None and 700 <= node.exit_status < 800
            if warning:
                self.report(f'{key}: relaxation warning [{node.exit_status}] {node.exit_message}; going on')
            if not (node.is_finished_ok or warning) or 'structure' not in node.outputs:
                failed.append(f'{key} ({node.process_label}<{node.pk}> [{node.exit_status}])')
                continue
            message = check_structure(node.outputs.structure.get_ase())
            if message:
                return self.exit_codes.ERROR_RELAXATION_UNPHYSICAL.format(system=key, message=message)
            self.ctx.structures[key] = node.outputs.structure
            self.out(f'relaxed_structures.{key}', node.outputs.structure)
            energy = node.outputs.output_parameters.get('energy_final')
            self.report(f'{key} relaxed with the DP: {energy} eV')
        if failed:
            return self.exit_codes.ERROR_SUB_PROCESS_FAILED_RELAX.format(systems=', '.join(failed))
        return None

    def run_scf(self):
        """Run the single point of every structure: ``lisei.cp2k.base`` or aiida-vasp's ``vasp.vasp``."""
        calcs = {}
        vasp = self.inputs.engine.value == 'vasp'
        for key, structure in self.ctx.structures.items():
            if vasp:
                process, inputs = VaspWorkChain, AttributeDict(self.exposed_inputs(VaspWorkChain, 'vasp'))
                inputs.kpoints = self.inputs.kpoints[key]
            else:
                process, inputs = (
                    Cp2kBaseWorkChain,
                    AttributeDict(self.exposed_inputs(Cp2kBaseWorkChain, 'scf')),
                )
            inputs.structure = structure
            inputs.metadata = {**inputs.get('metadata', {}), 'call_link_label': f'scf_{key}'}
            calcs[f'scf_{key}'] = self.submit(process, **inputs)
        return ToContext(**calcs)

    def inspect_scf(self):
        """Compute the gap and DOS of every structure from its last CalcJob."""
        self.ctx.results = {}
        for key in self.ctx.structures:
            node = self.ctx[f'scf_{key}']
            if self.inputs.engine.value == 'vasp':
                if not node.is_finished_ok:
                    return self.exit_codes.ERROR_VASP_FAILED.format(
                        process=f'{node.process_label}<{node.pk}>',
                        message=f'[{node.exit_status}] {node.exit_message}',
                    )
                calc = calculations(node)[-1]
            else:
                exit_code = cp2k_exit_code(node, self.exit_codes, PASSED_ON)
                if exit_code is not None:
                    return exit_code
                calc = calculations(node)[-1]
            try:
                if self.inputs.engine.value == 'vasp':
                    result = vasp_electronic_properties(
                        calc.outputs.retrieved, calc.inputs.parameters, self.inputs.dos_parameters
                    )
                else:
                    result = electronic_properties(
                        calc.outputs.eigenvalues,
                        calc.outputs.output_parameters,
                        calc.inputs.parameters,
                        self.inputs.dos_parameters,
                    )
            except (ValueError, KeyError, OSError, VaspOutputError) as exception:
                return self.exit_codes.ERROR_ANALYSIS_FAILED.format(system=key, message=str(exception))
            self.ctx.results[key] = result
            self.out(f'gaps.{key}', result['gap'])
            self.out(f'dos.{key}', result['dos'])
            if 'eigenvalues' in calc.outputs:
                self.out(f'eigenvalues.{key}', calc.outputs.eigenvalues)
            gap = result['gap']
            self.report(f'{key}: gap {gap["gap"]:.3f} eV ({gap["level_of_theory_label"]}; {gap["method"]})')
        return None

    def summarise(self):
        """Compare the gaps with the paper's and draw the DOS figure."""
        nodes = {}
        for key in self.ctx.structures:
            nodes[f'{key}_gap'] = self.ctx.results[key]['gap']
            nodes[f'{key}_dos'] = self.ctx.results[key]['dos']
        result = summarise_electronic_structure(**nodes)
        self.out('comparison', result['comparison'])
        self.out('dos_figure', result['dos_figure'])
        self.report('\n' + result['comparison']['table'])


def sei_electronic_structure_builder(
    cp2k_code: orm.AbstractCode,
    trajectory: orm.TrajectoryData,
    structure: orm.StructureData,
    *,
    analysis: orm.Dict | None = None,
    frame: int | None = None,
    region: Mapping[str, Any] | None = None,
    bulk: orm.StructureData | None = None,
    lammps_code: orm.AbstractCode | None = None,
    model: orm.Data | None = None,
    protocol: str | None = None,
    overrides: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> ProcessBuilder:
    """Extract the SEI of a restraint-MD trajectory and return the builder of its (and the bulk's) gaps.

    The study's last step in one call (the demo's): :func:`~aiida_lisei.workchains.sei_extraction.extract_sei`
    runs here (a calcfunction, stored) on the cluster-onset frame of ``analysis`` (or ``frame``, or the last
    frame, recorded in its ``extraction`` output), then the builder relaxes the SEI with the DP (when
    ``model`` and ``lammps_code`` are given; the bulk keeps its optimised geometry, as in the paper) and
    computes the gaps of ``sei`` and ``bulk`` (default: the 52-atom Li6PS5Cl of the atomic models).

    :param structure: the trajectory's structure with its groups (``GroupedStructureData``).
    :param analysis: the ``analysis`` output of ``lisei.nucleation_analysis`` (onset frame, region rule).
    :param region: :data:`~aiida_lisei.science.sei.REGION_DEFAULTS` (default: the SEI of the frame).
    :raises ValueError: a frame out of range, an empty region, overlapping atoms (before anything is stored).
    """
    from aiida_lisei.structures.functions import argyrodite_node
    from aiida_lisei.workchains.sei_extraction import check_sei_extraction, extract_sei

    region = dict(region or {})
    message = check_sei_extraction(
        trajectory, structure, frame, analysis.get_dict() if analysis is not None else None, region
    )
    if message:
        raise ValueError(f'SEI extraction: {message}')
    inputs: dict[str, Any] = {'trajectory': trajectory, 'structure': structure, 'region': orm.Dict(region)}
    if frame is not None:
        inputs['frame'] = orm.Int(frame)
    if analysis is not None:
        inputs['analysis'] = analysis
    slab = extract_sei(**inputs)['structure']
    bulk = bulk if bulk is not None else argyrodite_node(seed=20241125)
    return ElectronicStructureWorkChain.get_builder_from_protocol(
        cp2k_code,
        {'bulk': bulk, 'sei': slab},
        protocol=protocol,
        overrides=overrides,
        lammps_code=lammps_code,
        model=model,
        relax_structures=['sei'],
        options=options,
    )
