"""The paper's numbers: the one source of every number of the paper that the package compares with.

*Observing Li Nucleation at Li Metal-Solid Electrolyte Interface in All-Solid-State Batteries* (main text and
Supporting Information). The comparisons (:mod:`aiida_lisei.reporting.comparisons`), tables and figures read
them from here:

* :data:`PAPER_SANDWICH` — the Li|Li6PS5Cl|Li model of SI §3;
* :data:`PAPER_VALIDATION` and :data:`PAPER_SETUP` — the DP's errors on its validation frames and how they
  were obtained (Figure 1d, e; SI §1);
* :data:`PAPER_NUCLEATION`, :data:`PAPER_TEXT`, :data:`PAPER_SYSTEM` — the findings of §3 (Figs. 3-4) and the
  run they come from;
* :data:`PAPER_BAND_GAPS` — the band gaps of §3 (Fig. 4d) and the settings of SI (end).

The paper's *method* parameters are defaults of the science that uses them and are defined there once:
the CV's R0, weights and κ and the run length (:mod:`aiida_lisei.science.restraint_cv`) and the trust
levels of DP-GEN's selection (:mod:`aiida_lisei.science.selection`) are re-exported here; the QEq
parameters of Table S2 are :data:`aiida_lisei.science.qeq.PAPER_QEQ_PARAMETERS` (not re-exported: that
module loads JAX). No AiiDA imports.
"""

from __future__ import annotations

from typing import Any

from aiida_lisei.science.restraint_cv import PAPER_KAPPA, PAPER_R0, PAPER_STEPS, PAPER_WEIGHTS
from aiida_lisei.science.selection import PAPER_TRUST_TABLE

__all__ = (
    'PAPER_BAND_GAPS',
    'PAPER_KAPPA',
    'PAPER_NUCLEATION',
    'PAPER_R0',
    'PAPER_SANDWICH',
    'PAPER_SETUP',
    'PAPER_STEPS',
    'PAPER_SYSTEM',
    'PAPER_TEXT',
    'PAPER_TRUST_TABLE',
    'PAPER_VALIDATION',
    'PAPER_WEIGHTS',
)

#: The sandwich of the paper's SI §3 (cell in Å, strain of Li as a fraction).
PAPER_SANDWICH: dict[str, Any] = {
    'natoms': 4833,
    'anode_Li': 1296,
    'electrolyte': 2808,
    'source_Li': 729,
    'cell_lengths': (30.81, 30.81, 150.42),
    'lateral_strain': 0.0016,
}


#: The paper's errors of its DP on the validation frames (main text, Figure 1d and e).
PAPER_VALIDATION: dict[str, float] = {'rmse_e_per_atom': 5.45, 'rmse_f': 93.9}  # meV/atom, meV/Å

#: The paper's validation setup (main text, SI §1): what a run must match not to be flagged ``demo``.
PAPER_SETUP: dict[str, Any] = {
    'engine': 'vasp',
    'method': 'PBE',
    'natoms': 185,
    'n_frames': 100,
    'ensemble': 'npt',
    'temperature': 300.0,  # K
    'pressure': 1.0,  # bar
    'md_time': 200.0,  # ps
}

#: The paper's findings (main text §3, Figs. 3-4), as numbers where the text gives one.
PAPER_NUCLEATION: dict[str, Any] = {
    'cluster_onset_time_ps': 125.0,  # "emergence of a Li cluster ... at ~125 ps"
    'cluster_boundary_distance': 10.0,  # Å, "~1 nm away from the Li/SEI interface"
    'cluster_region': 'sei',
    'cluster_origin': 'electrolyte',  # "come from the Li6PS5Cl SE at the beginning"
    'cluster_nn_distance': 2.75,  # Å, Fig. 4b
    'anode_nn_distance': 2.96,  # Å, bcc Li, Fig. 4b
    'mean_li_charge': {'anode': 0.0, 'electrolyte': 1.0, 'cluster': 0.0},  # e, "close to 0", "close to +1"
}

#: The paper's numbers as the paper states them (for tables).
PAPER_TEXT: dict[str, str] = {
    'cluster_onset_time_ps': '~125 ps',
    'cluster_boundary_distance': '~1 nm',
    'cluster_region': 'SEI',
    'cluster_origin': 'electrolyte',
    'cluster_nn_distance': '2.75 Å',
    'anode_nn_distance': '~2.96 Å',
    'cluster_nn_contraction': '-0.21 Å',
    'mean_li_charge_anode': 'close to 0',
    'mean_li_charge_sei': 'between 0 and +1',
    'mean_li_charge_electrolyte': 'close to +1',
    'mean_li_charge_cluster': 'close to 0 (blue)',
}

#: The paper's system and run: a result from anything smaller or shorter is flagged ``demo_size``.
PAPER_SYSTEM: dict[str, Any] = {
    'natoms': 4833,
    'duration_ps': 150.0,
    'charge_times_ps': [100.0, 125.0, 150.0],
    'qeq_parameter_set': 'paper',
}


#: The band gaps of §3 (eV) and how they were computed (SI, end): bulk Li6PS5Cl with PBE, 2.15 eV, "in good
#: agreement with previous work" (refs 39-41, whose values the paper does not quote); the ~1 nm amorphous
#: SEI cut at the cluster onset (125 ps), DP-relaxed, periodic with no vacuum: zero gap; Li2S 3.53 eV from
#: ref. 45 (Gu et al., the SEI taken as crystalline Li2S), not computed in the paper.
PAPER_BAND_GAPS: dict[str, dict[str, Any]] = {
    'bulk': {
        'gap': 2.15,
        'method': 'PBE',
        'source': 'this paper (VASP, PBE, 600 eV, k 2x2x1); refs 39-41 agree',
    },
    'sei': {'gap': 0.0, 'method': 'PBE', 'source': 'this paper (VASP, PBE, 600 eV, Gamma-centred k 1x1x3)'},
    'li2s': {'gap': 3.53, 'method': 'DFT (ref. 45)', 'source': 'ref. 45, Gu et al., quoted by the paper'},
}
