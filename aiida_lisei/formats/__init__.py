"""Files that external programs read and write: pure readers and writers, no AiiDA imports.

PLUMED (``plumed.dat``, COLVAR), LAMMPS (data file, input scripts, log, dump, DeePMD's ``model_devi.out``),
the per-frame JSON Lines records and ``.npz`` frames of the package's own engines, CP2K and VASP outputs.
Calculations write and parsers read through these modules; the engines (``aiida_lisei.engines``) use them
on the compute side.
"""
