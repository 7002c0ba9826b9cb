"""aiida-lisei: the Li|Li6PS5Cl nucleation study as AiiDA workflows.

DFT labelling, DP-GEN concurrent learning of a DeePMD potential, moving-restraint
DPMD with PLUMED, QEq charges and nucleation analysis, with full provenance.
"""

__version__ = '0.1.0.dev0'
