"""The study at demo size: ``verdi -p lisei-demo run examples/run_demo.py``.

One work chain, ``lisei.study`` (protocol ``demo``), runs the whole study, so the graph has one root:

1. the four atomic models (bcc Li, ordered Li6PS5Cl, the Li/Li6PS5Cl interface, the Li|Li6PS5Cl|Li
   sandwich) at demo size, and at the paper's size for the comparison;
2. a small initial dataset (SI §2.1) for bcc Li16, Li6PS5Cl and the demo sandwich: relaxation, seeded
   perturbations, a few MD steps and CHGNet 0.3.0 labels (the demo's level of theory, not PBE);
3. concurrent learning (SI §2.2, DP-GEN's loop): train 4 small DeePMD models -> explore (LAMMPS) ->
   select by model deviation -> label (CHGNet) -> merge, three iterations;
4. moving-restraint DPMD (SI §4) of the demo sandwich after an NPT equilibration, with the physics guards
   and refinement on the fly (a run that leaves the ensemble's trust fine-tunes it on CHGNet labels);
5. validation of the models that drove it on the demo sandwich (NPT DPMD, labelled frames, RMSE beside the
   paper's, parity plot);
6. the nucleation analysis (paper §3): QEq charges (JAX, Table S2), SEI composition, Li clusters, RDFs,
   origins; the summary beside the paper's numbers. Not run when the restraint run failed its guards;
7. the SEI extracted at the cluster onset (or the last frame), relaxed with the model, and the gaps of the
   SEI and the bulk (GFN1-xTB with CP2K: a demo level of theory, not PBE) beside the paper's.

This script builds the study, runs it, and prints what each step made; figures are copied to
``lisei-demo-output/``. Everything is cached: a second run reuses every calculation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiida import orm
from aiida.engine import run_get_node
from aiida.manage import get_manager
from aiida.manage.caching import enable_caching

from aiida_lisei.reporting.tables import (
    format_guard_report,
    format_iterations_table,
    format_models_summary,
    format_nucleation_summary,
    format_paper_comparison,
    format_table,
    format_validation_comparison,
)
from aiida_lisei.workchains.study import StudyWorkChain

#: Folder (relative to the working directory) that receives copies of the demo's figures.
OUTPUT_FOLDER = Path('lisei-demo-output')

#: The study's codes by role -> the codes ``aiida-lisei setup localhost`` registers (label@computer).
DEMO_CODES = {
    'md_engine': 'lisei-chgnet-md',
    'label': 'lisei-chgnet',
    'dp': 'dp',
    'lmp': 'lmp',
    'lmp_plumed': 'lisei-lmp-plumed',
    'qeq': 'lisei-qeq',
    'electronic_structure': 'cp2k',
}


def step(study: orm.WorkflowNode, name: str) -> orm.ProcessNode | None:
    """Return the child of ``study`` called as step ``name`` (its call link label), or ``None``."""
    links = study.base.links.get_outgoing(link_label_filter=name).all()
    return links[0].node if links else None


def export_plots(plots, folder: Path) -> list[str]:
    """Copy the PNG nodes of ``plots`` (a namespace of ``SinglefileData``) to ``folder``; return the lines."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, node in sorted(plots.items()):
        path = folder / f'{name}.png'
        path.write_bytes(node.get_content(mode='rb'))
        lines.append(f'  {path}  (node <PK={node.pk}>)')
    return lines


def print_atomic_models(study: orm.WorkflowNode) -> None:
    """The paper-size models beside the paper, and the demo's."""
    paper = step(study, 'paper_size_models')
    if paper is not None:
        print(format_models_summary(paper, title="Atomic models at the paper's size (protocol `paper`)"))
        print(format_paper_comparison(paper.outputs.summary.get_dict()))
    print(format_models_summary(step(study, 'atomic_models'), title='Atomic models for the demo runs'))


def print_initial_data(node: orm.WorkflowNode) -> None:
    """The initial dataset per system, and how it differs from the paper's."""
    rows = [
        [
            system,
            summary['formula'],
            summary['natoms'],
            summary['nframes'],
            node.outputs.training_sets[system].pk,
        ]
        for system, summary in node.outputs.summary.get_dict().items()
    ]
    level = next(iter(node.outputs.training_sets.values())).level_of_theory_key
    print(f'\nInitial dataset (demo: CHGNet 0.3.0, {level}) <PK={node.pk}>')
    print(format_table(['system', 'formula', 'atoms', 'frames', 'training set PK'], rows))
    print(
        'Demo level of theory, honestly: the pretrained CHGNet 0.3.0 (fitted to MPtrj PBE/PBE+U), not the\n'
        "paper's PBE; a few relaxation and MD steps per system; the paper runs 20 ps of PBE AIMD per system\n"
        '(VASP) on bcc Li, Li6PS5Cl and the 185-atom interface.\n'
    )


def print_learning(node: orm.WorkflowNode) -> None:
    """The learning table per iteration, and how the demo differs from the paper."""
    iterations = {name: summary.get_dict() for name, summary in node.outputs.iterations.items()}
    trust = node.inputs.trust_levels.get_dict() if 'trust_levels' in node.inputs else {}
    f_hi = sorted({levels['f_hi'] for levels in trust.values() if isinstance(levels, dict)})
    print(f'\nConcurrent learning (demo), {len(iterations)} iterations <PK={node.pk}>')
    print(format_iterations_table(iterations))
    print(
        f'Final training set {node.outputs.training_set.nframes} frames <PK={node.outputs.training_set.pk}>; '
        f'models {", ".join(str(model.pk) for model in node.outputs.models.values())}.\n'
        'Demo size, honestly: 4 small models (embedding 8-16-32, fitting 32x3, float32, virials trained),\n'
        'CHGNet labels, three iterations of short explorations of bcc Li16, Li6PS5Cl and the demo sandwich;\n'
        f"upper trust level(s) {f_hi} eV/Å (the SI's loosest; its [0.10, 0.25] is out of reach for a\n"
        'network this small). The paper trains 25-50-100 / 240x3 networks on PBE labels over many\n'
        'iterations until 99 % of the frames are accurate (SI §2.2).\n'
    )


def print_validation(node: orm.WorkflowNode) -> None:
    """The validation's guards, RMSEs beside the paper's, and the parity plot."""
    others = sorted(model.pk for model in node.inputs.ensemble.values()) if 'ensemble' in node.inputs else []
    print(
        f'\nValidation on the demo sandwich <PK={node.pk}> of the models that drove the restraint run '
        f'(model <PK={node.inputs.model.pk}>; deviation with {others})'
    )
    if 'guards' in node.outputs:
        guards = node.outputs.guards
        print(format_guard_report(guards.get_dict(), f'Physics guards of its NPT DPMD <PK={guards.pk}>:'))
    if not node.is_finished_ok:
        print(
            f'THE VALIDATION STOPPED (exit status {node.exit_status}): {node.exit_message}\n'
            'No frame was labelled: the model does not hold the sandwich at the demo trust level.'
        )
        return
    print(format_validation_comparison(node.outputs.comparison.get_dict()))
    print('\n'.join(export_plots({'parity': node.outputs.parity_plot}, OUTPUT_FOLDER / 'model_validation')))


def print_restraint(node: orm.WorkflowNode) -> None:
    """The guards of the restraint run, its CV at the start, middle and end, and the plots."""
    segments = [child for child in node.called if child.process_label == 'RestraintMdCalculation']
    unphysical = 450 <= (node.exit_status or 0) <= 479
    if 'colvar' not in node.outputs:
        print(
            f'\nlisei.restraint_md <PK={node.pk}> failed with exit status {node.exit_status}: '
            f'{node.exit_message}'
        )
        return
    colvar = node.outputs.colvar
    time, cv, s0 = colvar.get_array('time'), colvar.get_array('cv'), colvar.get_array('s0')
    restraint = node.outputs.restraint.get_dict()
    print(f'\nMoving-restraint DPMD (demo) <PK={node.pk}>: {len(segments)} segments, {time[-1]:g} ps')
    if 'guards' in node.outputs:
        guards = node.outputs.guards
        print(format_guard_report(guards.get_dict(), f'Physics guards (docs/guards.md) <PK={guards.pk}>:'))
    if unphysical:
        print(
            f'\nTHE RESTRAINT RUN FAILED ITS PHYSICS GUARDS (exit status {node.exit_status}):\n'
            f'{node.exit_message}\nIts CV and plots below are for diagnosis only: they are NOT a result. The '
            'demo model\ndoes not hold the sandwich (docs/guards.md says why and what to do).'
        )
    rows = [
        [f'{time[index]:g}', f'{cv[index]:.4f}', f'{s0[index]:.4f}', f'{colvar.get_array("bias")[index]:.4f}']
        for index in sorted({0, len(time) // 2, len(time) - 1})
    ]
    print(format_table(['time (ps)', 'CV', 's0', 'bias (eV)'], rows))
    print(
        f'kappa {restraint["kappa"]} eV per (CV unit)^2, CV normalised by the electrolyte Li, '
        f'd_max {restraint["d_max"]} Å'
    )
    print('Plots (copies; the originals are nodes in the graph):')
    print('\n'.join(export_plots(node.outputs.plots, OUTPUT_FOLDER / 'restraint_md')))
    print(
        'Demo size, honestly: 230 atoms, 2 ps of NPT equilibration then 3 ps of pulling, a small model\n'
        'learned from CHGNet labels, d_max 4.5 Å (under half the equilibrated cell); the paper pulls the\n'
        '4833-atom sandwich for 150 ps on a PBE-trained model (here: the `paper` protocol, d_max 10 Å).\n'
    )


def print_analysis(node: orm.WorkflowNode) -> None:
    """The nucleation summary beside the paper's numbers, and the figures."""
    print(format_nucleation_summary(node.outputs.summary.get_dict()))
    print('Figures (copies; the originals are nodes in the graph):')
    print('\n'.join(export_plots(node.outputs.figures, OUTPUT_FOLDER / 'nucleation_analysis')))


def print_electronic_structure(node: orm.WorkflowNode) -> None:
    """The bulk and SEI gaps beside the paper's, labelled with the level of theory, and the DOS figure."""
    print(f'\nElectronic structure of the SEI and the bulk <PK={node.pk}>')
    if not node.is_finished_ok:
        print(f'FAILED (exit status {node.exit_status}): {node.exit_message}')
        return
    print(node.outputs.comparison['table'])
    print('\n'.join(export_plots({'dos': node.outputs.dos_figure}, OUTPUT_FOLDER / 'electronic_structure')))
    print(
        'Demo level of theory, honestly: GFN1-xTB orbital energies with CP2K at the Γ point, not the\n'
        "paper's PBE with VASP (600 eV, k 1x1x3 for the SEI); the step's `paper` protocol runs those.\n"
    )


def main() -> None:
    """Run the study and print what each step made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='demo', choices=['demo'], help='study protocol (docs/study.md)')
    parser.add_argument('--computer', default='localhost', help='computer with the codes of DEMO_CODES')
    args = parser.parse_args()

    codes = {role: orm.load_code(f'{label}@{args.computer}') for role, label in DEMO_CODES.items()}
    builder = StudyWorkChain.get_builder_from_protocol(codes, protocol=args.protocol)
    with enable_caching():
        _, study = run_get_node(builder)
    below = list(study.called_descendants)
    cached = sum(1 for node in below if node.base.caching.is_created_from_cache)
    print(f'\nlisei.study <PK={study.pk}>: {len(below)} processes below it, {cached} from the cache')

    print_atomic_models(study)
    printers = {
        'initial_data': print_initial_data,
        'concurrent_learning': print_learning,
        'restraint_md': print_restraint,
        'model_validation': print_validation,
        'nucleation_analysis': print_analysis,
        'electronic_structure': print_electronic_structure,
    }
    for name, printer in printers.items():
        node = step(study, name)
        if node is not None:
            printer(node)
    profile = get_manager().get_profile().name
    if not study.is_finished_ok:
        print(f'\nThe study ended with exit status {study.exit_status}: {study.exit_message}')
        if 450 <= study.exit_status <= 479:
            print(
                'The nucleation analysis was not run: it refuses a trajectory that failed its physics\n'
                'guards '
                "(`allow_failed_guards` in the study's `nucleation_analysis` step would analyse it anyway,\n"
                'marked NOT A RESULT).'
            )
        print(f'Inspect: verdi -p {profile} process report {study.pk}')
        raise SystemExit(3)
    print(f'Inspect: verdi -p {profile} process report {study.pk}  |  verdi -p {profile} node show <PK>')


if __name__ == '__main__':
    main()
