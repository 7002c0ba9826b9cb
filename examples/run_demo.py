"""The study at demo size: ``verdi -p lisei-demo run examples/run_demo.py``.

1. Build the four atomic models (bcc Li, ordered Li6PS5Cl, the Li/Li6PS5Cl interface, the
   Li|Li6PS5Cl|Li sandwich) through calcfunctions, at the paper's size and at demo size.
2. Build a small initial dataset (SI §2.1) for bcc Li16 and Li6PS5Cl: relaxation, seeded
   perturbations, a few NVT AIMD steps and GFN1-xTB labels with tblite (the demo method).
3. Concurrent learning (SI §2.2, DP-GEN's loop): two iterations of train (4 tiny DeePMD models) ->
   explore (LAMMPS at 300 and 600 K) -> select by model deviation -> label (tblite) -> merge.
4. Moving-restraint DPMD (SI §4) of the demo sandwich with the learned model and the paper's CV, in
   three segments; the CV, coordination and bias/work plots are written to ``lisei-demo-output/``.
5. Nucleation analysis (paper §3): QEq charges of the frames (JAX, Table S2), SEI composition, Li
   clusters, RDFs, origins; the summary beside the paper's numbers, figures in ``lisei-demo-output/``.

Everything is cached: a second run reuses every calculation.
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
from aiida_lisei.workchains.atomic_models import AtomicModelsWorkChain
from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain, extend_training_set
from aiida_lisei.workchains.initial_data_chgnet import InitialDataChgnetWorkChain
from aiida_lisei.workchains.model_validation import ModelValidationWorkChain
from aiida_lisei.workchains.nucleation_analysis import NucleationAnalysisWorkChain
from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain

#: Folder (relative to the working directory) that receives copies of the demo's figures.
OUTPUT_FOLDER = Path('lisei-demo-output')

#: Systems of the demo's initial dataset and concurrent learning: the bulk phases and the demo sandwich
#: itself, whose interfaces and free surfaces the restraint run visits (CHGNet labels, docs/initial_data.md).
DEMO_DATASET_SYSTEMS = ('bcc_lithium', 'argyrodite', 'sandwich')

#: Upper force trust level of the demo ensemble (eV/Å): the concurrent-learning protocol's `demo_chgnet`
#: levels, also the limit of the restraint run's deviation guard.
DEMO_TRUST_F_HI = 0.50


def run_cached(builder, name: str):
    """Run ``builder`` with caching on, report cache hits, and stop on failure."""
    with enable_caching():
        _, node = run_get_node(builder)
    calculations = list(node.called_descendants)
    cached = sum(1 for called in calculations if called.base.caching.is_created_from_cache)
    print(f'{name} <PK={node.pk}>: {len(calculations)} processes below it, {cached} from the cache')
    if not node.is_finished_ok:
        raise SystemExit(f'{name} failed with exit status {node.exit_status}: verdi process report {node.pk}')
    return node


def build_initial_dataset(models, computer: str):
    """Run ``lisei.initial_data.chgnet`` (protocol ``demo_chgnet``) on bcc Li16, Li6PS5Cl and the demo
    sandwich; print its summary."""
    builder = InitialDataChgnetWorkChain.get_builder_from_protocol(
        orm.load_code(f'lisei-chgnet-md@{computer}'),
        orm.load_code(f'lisei-chgnet@{computer}'),
        {name: models.outputs[name] for name in DEMO_DATASET_SYSTEMS},
        protocol='demo_chgnet',
    )
    node = run_cached(builder, 'lisei.initial_data.chgnet (demo_chgnet)')
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
    level = node.outputs.training_sets[DEMO_DATASET_SYSTEMS[0]].level_of_theory_key
    print(f'\nInitial dataset (demo: CHGNet 0.3.0, {level})')
    print(format_table(['system', 'formula', 'atoms', 'frames', 'training set PK'], rows))
    print(
        'Demo level of theory, honestly: the pretrained CHGNet 0.3.0 (fitted to MPtrj PBE/PBE+U), not the\n'
        "paper's PBE; a few relaxation and MD steps (~0.04 ps) per system; the paper runs 20 ps of PBE AIMD\n"
        'per system (VASP) on bcc Li, Li6PS5Cl and the 185-atom interface.\n'
    )
    return node


def run_concurrent_learning(models, initial, computer: str):
    """Run ``lisei.concurrent_learning`` (protocol ``demo_chgnet``) from the initial dataset."""
    training_sets = initial.outputs.training_sets
    first, *others = DEMO_DATASET_SYSTEMS
    with enable_caching():  # the merge is a calcfunction: cached like the rest
        training_set = extend_training_set(
            training_sets[first], **{name: training_sets[name] for name in others}
        )
    builder = ConcurrentLearningWorkChain.get_builder_from_protocol(
        orm.load_code(f'dp@{computer}'),
        orm.load_code(f'lmp@{computer}'),
        orm.load_code(f'lisei-chgnet@{computer}'),
        training_set,
        {name: models.outputs[name] for name in DEMO_DATASET_SYSTEMS},
        protocol='demo_chgnet',
    )
    node = run_cached(builder, 'lisei.concurrent_learning (demo_chgnet)')
    iterations = {name: summary.get_dict() for name, summary in node.outputs.iterations.items()}
    print(f'\nConcurrent learning (demo), {len(iterations)} iterations <PK={node.pk}>')
    print(format_iterations_table(iterations))
    print(
        f'Final training set {node.outputs.training_set.nframes} frames <PK={node.outputs.training_set.pk}>; '
        f'models {", ".join(str(model.pk) for model in node.outputs.models.values())}.\n'
        'Demo size, honestly: 4 small models (embedding 8-16-32, fitting 32x3, float32, 2000 steps, virials\n'
        'trained), CHGNet labels, three iterations of short explorations of bcc Li16, Li6PS5Cl and the demo\n'
        f"sandwich; trust levels [0.25, {DEMO_TRUST_F_HI}] eV/Å for every system (the SI's loosest; its\n"
        '[0.10, 0.25] is out of reach for a network this small). The paper trains 25-50-100 / 240x3\n'
        'networks on PBE labels over many iterations until 99 % of the frames are accurate (SI §2.2).\n'
    )
    return node


def run_validation(models, learning, computer: str):
    """Run ``lisei.model_validation`` of the first model on the demo sandwich with CHGNet labels; print the
    errors beside the paper's and export the parity plot."""
    ensemble = dict(sorted(learning.outputs.models.items()))
    driver, *others = ensemble
    builder = ModelValidationWorkChain.get_builder_from_protocol(
        orm.load_code(f'lmp@{computer}'),
        orm.load_code(f'dp@{computer}'),
        orm.load_code(f'lisei-chgnet@{computer}'),
        ensemble[driver],
        models.outputs.sandwich,
        protocol='demo_chgnet',
        ensemble={name: ensemble[name] for name in others},
    )
    with enable_caching():
        _, node = run_get_node(builder)
    print(f'\nValidation of the demo model on the demo sandwich <PK={node.pk}>')
    if 'guards' in node.outputs:
        guards = node.outputs.guards
        print(format_guard_report(guards.get_dict(), f'Physics guards of its NPT DPMD <PK={guards.pk}>:'))
    if not node.is_finished_ok:
        print(
            f'THE VALIDATION STOPPED (exit status {node.exit_status}): {node.exit_message}\n'
            'No frame was labelled: the model does not hold the sandwich at the demo trust level.'
        )
        return node
    print(format_validation_comparison(node.outputs.comparison.get_dict()))
    print('\n'.join(export_plots({'parity': node.outputs.parity_plot}, OUTPUT_FOLDER / 'model_validation')))
    return node


def export_plots(plots, folder: Path) -> list[str]:
    """Copy the PNG nodes of ``plots`` (a namespace of ``SinglefileData``) to ``folder``; return the lines."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, node in sorted(plots.items()):
        path = folder / f'{name}.png'
        path.write_bytes(node.get_content(mode='rb'))
        lines.append(f'  {path}  (node <PK={node.pk}>)')
    return lines


def run_restraint_md(models, learning, computer: str):
    """Run ``lisei.restraint_md`` (demo protocol) on the demo sandwich with the first learned model, the
    other models of the ensemble giving the model deviation; print the guards. Return the node and whether
    the run passed its physics guards."""
    ensemble = dict(sorted(learning.outputs.models.items()))
    driver, *others = ensemble
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        orm.load_code(f'lisei-lmp-plumed@{computer}'),
        models.outputs.sandwich,
        ensemble[driver],
        protocol='demo',
        deviation_models={name: ensemble[name] for name in others},
        equilibration_code=orm.load_code(f'lmp@{computer}'),
        overrides={'md': {'guards': {'deviation_f_hi': DEMO_TRUST_F_HI}}},
    )
    with enable_caching():
        _, node = run_get_node(builder)
    segments = [child for child in node.called if child.process_label == 'RestraintMdCalculation']
    unphysical = 450 <= (node.exit_status or 0) <= 479
    if not (node.is_finished_ok or unphysical) or 'colvar' not in node.outputs:
        raise SystemExit(
            f'lisei.restraint_md failed with exit status {node.exit_status}: verdi process report {node.pk}'
        )
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
        'Demo size, honestly: 230 atoms, 1 ps of NPT equilibration then 3 ps of pulling, a small model\n'
        'learned from CHGNet labels, d_max 5 Å (half the 10.25 Å lateral cell); the paper pulls the\n'
        '4833-atom sandwich for 150 ps on a PBE-trained model (here: the `paper` protocol, d_max 10 Å).\n'
    )
    return node, not unphysical


def run_nucleation_analysis(models, restraint, computer: str):
    """Run ``lisei.nucleation_analysis`` (demo protocol) on the restraint run; print the paper comparison."""
    builder = NucleationAnalysisWorkChain.get_builder_from_protocol(
        orm.load_code(f'lisei-qeq@{computer}'),
        restraint.outputs.trajectory,
        models.outputs.sandwich,
        protocol='demo',
        colvar=restraint.outputs.colvar,
    )
    node = run_cached(builder, 'lisei.nucleation_analysis (demo)')
    print()
    print(format_nucleation_summary(node.outputs.summary.get_dict()))
    print('Figures (copies; the originals are nodes in the graph):')
    print('\n'.join(export_plots(node.outputs.figures, OUTPUT_FOLDER / 'nucleation_analysis')))
    return node


def main() -> None:
    """Run the demo and print what it made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='demo', choices=['demo', 'paper'])
    parser.add_argument('--computer', default='localhost', help='computer with the lisei-tblite(-md) codes')
    args = parser.parse_args()

    paper = run_cached(
        AtomicModelsWorkChain.get_builder_from_protocol(protocol='paper'), 'lisei.atomic_models'
    )
    print(format_models_summary(paper, title="Atomic models at the paper's size (protocol `paper`)"))
    print(format_paper_comparison(paper.outputs.summary.get_dict()))
    models = paper
    if args.protocol != 'paper':
        models = run_cached(
            AtomicModelsWorkChain.get_builder_from_protocol(protocol=args.protocol), 'demo models'
        )
        print(
            format_models_summary(
                models, title=f'Atomic models for the demo runs (protocol `{args.protocol}`)'
            )
        )
    initial = build_initial_dataset(models, args.computer)
    learning = run_concurrent_learning(models, initial, args.computer)
    run_validation(models, learning, args.computer)
    restraint, sound = run_restraint_md(models, learning, args.computer)
    profile = get_manager().get_profile().name
    if not sound:
        print(
            'The nucleation analysis is not run: it refuses a trajectory that failed its physics guards\n'
            '(`allow_failed_guards=True` would analyse it anyway, marked NOT A RESULT).'
        )
        print(f'Inspect: verdi -p {profile} process report {restraint.pk}')
        raise SystemExit(3)
    run_nucleation_analysis(models, restraint, args.computer)
    print(f'Inspect: verdi -p {profile} process show <PK>  |  verdi -p {profile} node show <PK>')


if __name__ == '__main__':
    main()
