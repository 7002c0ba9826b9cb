"""Our numbers beside the paper's, with agreement and demo flags: models, validation, nucleation (no AiiDA).

Every comparison takes plain dicts (the work chains' outputs or their pure counterparts) and the paper's
numbers of :mod:`aiida_lisei.reporting.paper`; the work chains call these through calcfunctions, and
:mod:`aiida_lisei.reporting.tables` formats the results for people.

* :func:`sandwich_comparison` — the sandwich built by ``lisei.atomic_models`` against SI §3;
* :func:`validation_comparison` — the model's RMSEs against Figure 1d, e (``lisei.model_validation``);
* :func:`nucleation_comparison` — the nucleation findings against §3, Figs. 3-4
  (``lisei.nucleation_analysis``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiida_lisei.reporting.paper import (
    PAPER_BAND_GAPS,
    PAPER_NUCLEATION,
    PAPER_SANDWICH,
    PAPER_SETUP,
    PAPER_SYSTEM,
    PAPER_TEXT,
    PAPER_VALIDATION,
)

__all__ = (
    'COMPARISON_UNITS',
    'TOLERANCES',
    'band_gap_comparison',
    'nucleation_comparison',
    'sandwich_comparison',
    'validation_comparison',
)

#: Units of the ``comparison`` output.
COMPARISON_UNITS = {
    'rmse_e_per_atom': 'meV/atom',
    'rmse_f': 'meV/Å',
    'temperature': 'K',
    'pressure': 'bar',
    'md_time': 'ps',
}

#: Tolerances of the agreement checks (units of each quantity): the paper writes "~125 ps", "~1 nm".
TOLERANCES: dict[str, Any] = {
    'cluster_onset_time_ps': 25.0,  # ps, the spacing of the paper's snapshots (100, 125, 150 ps)
    'cluster_boundary_distance': 5.0,  # Å
    'nn_distance': 0.05,  # Å
    'charge': 0.25,  # e, for "≈ 0" and "≈ +1"
}


def sandwich_comparison(summary: Mapping[str, Any]) -> list[list[Any]]:
    """Return ``[quantity, paper, ours]`` rows of the paper-size sandwich of ``summary`` (the output of
    ``lisei.atomic_models``) against SI §3: atoms per region, cell lengths (Å), lateral strain of Li."""
    sandwich = summary['sandwich']
    counts = sandwich['group_counts']
    ours = {
        'natoms': sandwich['natoms'],
        'anode_Li': counts.get('anode_Li', 0),
        'electrolyte': sum(n for group, n in counts.items() if group.startswith('electrolyte_')),
        'source_Li': counts.get('source_Li', 0),
    }
    rows = [[key, PAPER_SANDWICH[key], value] for key, value in ours.items()]
    for axis, paper_length, length in zip(
        'xyz', PAPER_SANDWICH['cell_lengths'], sandwich['cell_lengths'], strict=True
    ):
        rows.append([f'cell {axis} (Å)', f'{paper_length:.2f}', f'{length:.2f}'])
    rows.append(
        [
            'Li lateral strain',
            f'{100 * PAPER_SANDWICH["lateral_strain"]:+.2f} %',
            f'{100 * sandwich["lateral_strain"]:+.3f} %',
        ]
    )
    return rows


def _same(ours: Any, paper: Any) -> bool:
    """Whether a setup value matches the paper's (numbers within 1e-6 relative, strings case-blind)."""
    if isinstance(paper, str):
        return isinstance(ours, str) and ours.lower() == paper.lower()
    if ours is None:
        return False
    return math.isclose(float(ours), float(paper), rel_tol=1e-6)


def validation_comparison(errors: Mapping[str, Any], setup: Mapping[str, Any]) -> dict[str, Any]:
    """Return our RMSEs next to the paper's and whether the setup is the paper's.

    :param errors: ``rmse_e_per_atom`` (eV/atom), ``rmse_f`` (eV/Å), ``mae_e_per_atom``, ``mae_f``, as in the
        ``output_parameters`` of ``lisei.dp_test``.
    :param setup: our values of the keys of :data:`PAPER_SETUP` (engine and method of the labels, atoms,
        frames tested, MD ensemble, temperature K, pressure bar, MD time ps).
    :return: ``mode`` (``'paper'`` if every setup value matches the paper's, else ``'demo'``),
        ``differences`` (one line per mismatch), ``rmse_e_per_atom`` and ``rmse_f`` (each ``{'ours',
        'paper', 'ratio'}`` in meV/atom and meV/Å), ``mae_e_per_atom`` and ``mae_f`` (ours, meV),
        ``setup`` (``{'ours', 'paper'}``), ``units`` and a one-line ``summary``.
    """
    differences = [
        f'{key}: ours {setup.get(key)!r}, paper {value!r}'
        for key, value in PAPER_SETUP.items()
        if not _same(setup.get(key), value)
    ]
    mode = 'demo' if differences else 'paper'
    result: dict[str, Any] = {'mode': mode, 'differences': differences}
    for key, paper in PAPER_VALIDATION.items():
        ours = 1000.0 * float(errors[key])
        result[key] = {'ours': ours, 'paper': paper, 'ratio': ours / paper}
    for key in ('mae_e_per_atom', 'mae_f'):
        if key in errors:
            result[key] = {'ours': 1000.0 * float(errors[key])}
    result['setup'] = {'ours': {key: setup.get(key) for key in PAPER_SETUP}, 'paper': dict(PAPER_SETUP)}
    result['units'] = {**COMPARISON_UNITS, 'mae_e_per_atom': 'meV/atom', 'mae_f': 'meV/Å'}
    energy, force = result['rmse_e_per_atom'], result['rmse_f']
    flag = (
        'paper setup'
        if mode == 'paper'
        else f'DEMO, not comparable: {len(differences)} difference(s) from the paper'
    )
    result['summary'] = (
        f'RMSE energy {energy["ours"]:.3g} meV/atom (paper {energy["paper"]}), force {force["ours"]:.3g} '
        f'meV/Å (paper {force["paper"]}) [{flag}]'
    )
    return result


def _close(ours: float | None, paper: float, tolerance: float) -> bool | None:
    """Whether ``ours`` is within ``tolerance`` of ``paper`` (``None`` if we have no number)."""
    if ours is None or not math.isfinite(ours):
        return None
    return abs(ours - paper) <= tolerance


def _dominant(fractions: Mapping[str, float] | None) -> str | None:
    """The origin with the largest fraction, or ``None``."""
    if not fractions or not any(fractions.values()):
        return None
    return max(fractions, key=lambda key: fractions[key])


def nucleation_comparison(summary: Mapping[str, Any], setup: Mapping[str, Any]) -> dict[str, Any]:
    """Return our nucleation numbers beside the paper's, with agreement and demo-size flags.

    :param summary: the ``summary`` of :func:`~aiida_lisei.science.nucleation.summarise_trajectory`.
    :param setup: ``natoms``, ``duration_ps`` (last minus first analysed time), ``charge_times_ps`` (times of
        the frames of the charge statistics), ``qeq_parameter_set``, ``n_charge_frames``, ``not_converged``
        (frames whose QEq did not converge), ``onset_size``.
    :return: ``mode`` (``paper`` if system, duration and QEq parameters are the paper's, else ``demo``),
        ``differences`` (one line per mismatch of the setup), ``quantities`` (a list of rows ``{key, label,
        ours, paper, unit, agrees, tolerance, demo_size, note}``; ``agrees`` is ``None`` where we have no
        number), ``notes`` (plain sentences), ``setup`` and ``analysis_summary`` (the input ``summary``).
    """
    differences = []
    if setup.get('natoms') != PAPER_SYSTEM['natoms']:
        differences.append(f'natoms: ours {setup.get("natoms")}, paper {PAPER_SYSTEM["natoms"]}')
    duration = setup.get('duration_ps')
    if duration is None or duration < 0.99 * PAPER_SYSTEM['duration_ps']:
        differences.append(f'duration: ours {duration} ps, paper {PAPER_SYSTEM["duration_ps"]} ps')
    if setup.get('qeq_parameter_set') != PAPER_SYSTEM['qeq_parameter_set']:
        differences.append(f'QEq parameters: ours {setup.get("qeq_parameter_set")!r}, paper Table S2')
    small = setup.get('natoms') != PAPER_SYSTEM['natoms'] or bool(
        duration is None or duration < 0.99 * PAPER_SYSTEM['duration_ps']
    )
    other_charges = setup.get('qeq_parameter_set') != PAPER_SYSTEM['qeq_parameter_set']
    paper = PAPER_NUCLEATION
    charges = summary.get('mean_li_charge') or {}
    q = {region: charges.get(region) for region in ('anode', 'sei', 'electrolyte', 'cluster')}
    origin = _dominant(summary.get('cluster_origin_at_onset'))
    contraction = summary.get('cluster_nn_contraction')

    def row(key, label, ours, paper_value, unit, agrees, tolerance, demo, note='') -> dict[str, Any]:
        return {
            'key': key,
            'label': label,
            'ours': ours,
            'paper': paper_value,
            'paper_text': PAPER_TEXT[key],
            'unit': unit,
            'agrees': agrees,
            'tolerance': tolerance,
            'demo_size': demo,
            'note': note,
        }

    tol = TOLERANCES
    onset = summary.get('cluster_onset_time_ps')
    distance = summary.get('cluster_boundary_distance_at_onset')
    rows = [
        row(
            'cluster_onset_time_ps',
            'cluster onset time',
            onset,
            paper['cluster_onset_time_ps'],
            'ps',
            _close(onset, paper['cluster_onset_time_ps'], tol['cluster_onset_time_ps']),
            f'± {tol["cluster_onset_time_ps"]:g} ps',
            small,
            'no isolated cluster reached the onset size' if onset is None else '',
        ),
        row(
            'cluster_boundary_distance',
            'cluster distance from anode/SEI boundary',
            distance,
            paper['cluster_boundary_distance'],
            'Å',
            _close(distance, paper['cluster_boundary_distance'], tol['cluster_boundary_distance']),
            f'± {tol["cluster_boundary_distance"]:g} Å ("~1 nm")',
            small,
            'centre height above the boundary, at the onset',
        ),
        row(
            'cluster_region',
            'region of the cluster',
            summary.get('cluster_region_at_onset'),
            paper['cluster_region'],
            '',
            None
            if summary.get('cluster_region_at_onset') is None
            else summary['cluster_region_at_onset'] == 'sei',
            'same region',
            small,
        ),
        row(
            'cluster_origin',
            'initial region of the cluster Li',
            origin,
            paper['cluster_origin'],
            '',
            None if origin is None else origin == paper['cluster_origin'],
            'largest origin fraction',
            small,
            ''
            if origin is None
            else ', '.join(f'{k} {v:.0%}' for k, v in summary['cluster_origin_at_onset'].items() if v),
        ),
        row(
            'cluster_nn_distance',
            'cluster Li-Li nearest neighbour',
            summary.get('cluster_nn_distance'),
            paper['cluster_nn_distance'],
            'Å',
            _close(summary.get('cluster_nn_distance'), paper['cluster_nn_distance'], tol['nn_distance']),
            f'± {tol["nn_distance"]:g} Å',
            small,
            'first peak of g(r), frames from the onset on',
        ),
        row(
            'anode_nn_distance',
            'anode (bcc) Li-Li nearest neighbour',
            summary.get('anode_nn_distance'),
            paper['anode_nn_distance'],
            'Å',
            _close(summary.get('anode_nn_distance'), paper['anode_nn_distance'], tol['nn_distance']),
            f'± {tol["nn_distance"]:g} Å',
            False,
            'bulk property of the potential, not of the system size',
        ),
        row(
            'cluster_nn_contraction',
            'cluster nn minus bcc nn',
            contraction,
            round(paper['cluster_nn_distance'] - paper['anode_nn_distance'], 3),
            'Å',
            None if contraction is None else contraction < 0.0,
            'negative (shorter than bcc)',
            small,
        ),
        row(
            'mean_li_charge_anode',
            'mean Li charge, anode',
            q['anode'],
            paper['mean_li_charge']['anode'],
            'e',
            _close(q['anode'], paper['mean_li_charge']['anode'], tol['charge']),
            f'± {tol["charge"]:g} e ("close to 0")',
            small or other_charges,
        ),
        row(
            'mean_li_charge_sei',
            'mean Li charge, SEI',
            q['sei'],
            'between',
            'e',
            None
            if None in (q['anode'], q['sei'], q['electrolyte'])
            else q['anode'] < q['sei'] < q['electrolyte'],
            'anode < SEI < electrolyte',
            small or other_charges,
        ),
        row(
            'mean_li_charge_electrolyte',
            'mean Li charge, electrolyte',
            q['electrolyte'],
            paper['mean_li_charge']['electrolyte'],
            'e',
            _close(q['electrolyte'], paper['mean_li_charge']['electrolyte'], tol['charge']),
            f'± {tol["charge"]:g} e ("close to +1")',
            small or other_charges,
        ),
        row(
            'mean_li_charge_cluster',
            'mean Li charge, cluster',
            q['cluster'],
            paper['mean_li_charge']['cluster'],
            'e',
            _close(q['cluster'], paper['mean_li_charge']['cluster'], tol['charge']),
            f'± {tol["charge"]:g} e ("close to 0")',
            small or other_charges,
            'no cluster in a frame with charges' if q['cluster'] is None else '',
        ),
    ]

    notes = [
        "The paper's numbers are read from its text and figures: '~125 ps' and '~1 nm' are approximate, the "
        'charges a colour scale (Fig. 3b-d); the tolerances above are ours.'
    ]
    if small:
        notes.append(
            f'DEMO: {"; ".join(differences)}. Rows flagged demo-size come from a smaller system or a shorter '
            "run than the paper's: they test the analysis, not the paper's claims."
        )
    if other_charges:
        notes.append(
            f"Charges use the QEq parameter set {setup.get('qeq_parameter_set')!r}, not the paper's Table S2."
        )
    if q['electrolyte'] is not None and abs(q['electrolyte'] - 1.0) > tol['charge']:
        notes.append(
            f'Our mean electrolyte Li charge is {q["electrolyte"]:+.2f} e where the paper describes Li+ as '
            '"close to +1": QEq charges with Table S2 are a relative scale; the ordering of the regions is '
            'the comparable claim.'
        )
    if setup.get('not_converged'):
        notes.append(f'{setup["not_converged"]} QEq frame(s) did not converge; their charges are used as is.')
    if onset is None:
        notes.append(
            f'No isolated metallic Li cluster of {setup.get("onset_size", "?")} or more atoms formed: the '
            'cluster rows are empty.'
        )
    return {
        'mode': 'demo' if differences else 'paper',
        'differences': differences,
        'quantities': rows,
        'notes': notes,
        'setup': dict(setup),
        'paper_setup': dict(PAPER_SYSTEM),
        'analysis_summary': dict(summary),
    }


def band_gap_comparison(gaps: Mapping[str, Mapping[str, Any]], tolerance: float = 0.3) -> dict[str, Any]:
    """Our band gaps beside the paper's (:data:`~aiida_lisei.reporting.paper.PAPER_BAND_GAPS`).

    :param gaps: ``{system: {'gap': eV, 'method': level of theory, ...}}`` for ``bulk``, ``sei``, ``li2s``
        (others are listed without a paper value).
    :param tolerance: eV; agreement is only claimed between the same level of theory (PBE vs PBE).
    :return: ``{'rows': [{system, gap, method, paper_gap, paper_method, comparable, agrees}], 'units': ...}``;
        ``comparable`` is False when the methods differ (e.g. GFN1-xTB against the paper's PBE), and then
        ``agrees`` is None.
    """
    rows = []
    for system, ours in gaps.items():
        paper = PAPER_BAND_GAPS.get(system)
        method = str(ours.get('method'))
        comparable = paper is not None and method.upper() == str(paper['method']).upper()
        agrees = None
        if comparable and ours.get('gap') is not None:
            agrees = abs(float(ours['gap']) - paper['gap']) <= tolerance
        rows.append(
            {
                'system': system,
                'gap': ours.get('gap'),
                'method': method,
                'paper_gap': None if paper is None else paper['gap'],
                'paper_method': None if paper is None else paper['method'],
                'paper_source': None if paper is None else paper['source'],
                'comparable': comparable,
                'agrees': agrees,
            }
        )
    return {'rows': rows, 'tolerance': tolerance, 'units': {'gap': 'eV'}}
