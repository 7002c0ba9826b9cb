"""Tests of the LAMMPS script of the moving-restraint MD (``generate_restraint_md_script``).

The script's runs (fresh start, NPT, restart segments) are exercised for real in
``test_lammps_plumed.py``; here its text and the parameter checks.
"""

from __future__ import annotations

import pytest

from aiida_lisei.engines.lammps_plumed import rewrite_script
from aiida_lisei.formats.lammps import (
    DEFAULT_RESTRAINT_MD_PARAMETERS,
    RESTART_PATTERN,
    RESTRAINT_FIX_ID,
    check_restraint_md_parameters,
    generate_restraint_md_script,
)

TYPE_MAP = ('Li', 'P', 'S', 'Cl')
#: An exploration as the sandwich's equilibration: NPT, x and y scaled together, z fixed.
LATERAL_EQUILIBRATION = {
    'ensemble': 'npt',
    'temperature': 300.0,
    'pressure': 1.0,
    'n_steps': 100,
    'pressure_coupling': 'xy_coupled',
}


def lines_of(script: str) -> list[str]:
    return [line for line in script.splitlines() if line and not line.startswith('#')]


def test_defaults_are_the_papers_md() -> None:
    """NPT at 300 K and 1 bar, 1 fs: the SI's conditions; only n_steps is required."""
    full = check_restraint_md_parameters({'n_steps': 10})
    assert full == {**DEFAULT_RESTRAINT_MD_PARAMETERS, 'n_steps': 10}
    assert (full['ensemble'], full['temperature'], full['pressure'], full['timestep']) == (
        'npt',
        300.0,
        1.0,
        1.0,
    )


def test_npt_script() -> None:
    """Barostat on x and y only (z fixed), the restraint fix before it, thermo after both, a fresh start."""
    script = generate_restraint_md_script(
        {'n_steps': 5000, 'thermo_stride': 10, 'dump_stride': 100, 'restart_stride': 1000},
        'model.pb',
        TYPE_MAP,
        1234,
    )
    lines = lines_of(script)
    assert lines[:7] == [
        'units metal',
        'boundary p p p',
        'atom_style atomic',
        'read_data structure.data',
        'pair_style deepmd model.pb',
        'pair_coeff * * Li P S Cl',
        'timestep 0.001',
    ]
    assert 'velocity all create 300.0 1234 dist gaussian mom yes' in lines
    fix = lines.index(f'fix {RESTRAINT_FIX_ID} all plumed plumedfile plumed.dat outfile plumed.log')
    assert lines[fix + 1] == f'fix_modify {RESTRAINT_FIX_ID} energy yes virial yes'
    npt = lines[fix + 2]
    assert npt == 'fix md all npt temp 300.0 300.0 0.1 x 1.0 1.0 1.0 y 1.0 1.0 1.0 couple none'
    assert ' z ' not in npt and 'iso' not in npt
    thermo_style = next(i for i, line in enumerate(lines) if line.startswith('thermo_style'))
    assert thermo_style > fix + 2  # f_restraint needs the fix
    assert lines[thermo_style] == (
        'thermo_style custom step time temp press pe ke etotal econserve vol lx ly lz pxx pyy pzz f_restraint'
    )
    assert 'thermo_modify lost error flush yes norm no' in lines
    assert 'thermo 10' in lines
    assert 'dump traj all custom 100 traj.dump id type x y z ix iy iz' in lines
    assert 'restart 1000 restart.*' in lines
    assert lines[-2:] == ['run 5000 upto', f'write_restart {RESTART_PATTERN}']
    assert not any(line.startswith(('read_restart', 'timer')) for line in lines)


def test_nvt_restart_and_timeout() -> None:
    """A continued segment: read_restart, no new velocities, dump appended; timer timeout before run."""
    script = generate_restraint_md_script(
        {
            'ensemble': 'nvt',
            'n_steps': 150_000,
            'temperature': 350,
            'thermostat_damping': 50.0,
            'restart_stride': 0,
        },
        'frozen.pb',
        TYPE_MAP,
        7,
        restart_file='restart.*',
        plumed_file='bias.dat',
        plumed_log='bias.log',
        dump_file='segment.dump',
        timeout_seconds=3 * 3600 + 62,
    )
    lines = lines_of(script)
    assert 'read_restart restart.*' in lines and not any(line.startswith('read_data') for line in lines)
    assert not any(line.startswith('velocity') for line in lines)
    assert 'fix md all nvt temp 350 350 0.05' in lines
    assert f'fix {RESTRAINT_FIX_ID} all plumed plumedfile bias.dat outfile bias.log' in lines
    assert 'dump_modify traj sort id format float %.12g append yes' in lines
    assert not any(line.startswith('restart ') for line in lines)
    assert lines[-3:] == ['timer timeout 3:01:02 every 100', 'run 150000 upto', 'write_restart restart.*']


def test_local_engine_reads_the_standard_script() -> None:
    """lisei-lmp-plumed turns the script's fix plumed into fix external, in place, before the integrator."""
    script = generate_restraint_md_script({'n_steps': 10}, 'model.pb', TYPE_MAP, 1)
    lines, fix = rewrite_script(script)
    assert (fix.fix_id, fix.plumed_file, fix.log_file) == (RESTRAINT_FIX_ID, 'plumed.dat', 'plumed.log')
    at = lines.index(f'fix {RESTRAINT_FIX_ID} all external pf/callback 1 1')
    assert lines[at + 1 : at + 4] == [
        f'fix_modify {RESTRAINT_FIX_ID} energy yes virial yes',
        f'fix_modify {RESTRAINT_FIX_ID} energy yes virial yes',  # the script's own, kept
        'fix md all npt temp 300.0 300.0 0.1 x 1.0 1.0 1.0 y 1.0 1.0 1.0 couple none',
    ]
    assert not any(' plumed ' in line for line in lines)


@pytest.mark.parametrize(
    ('parameters', 'message'),
    [
        ({}, 'n_steps'),
        ({'n_steps': 0}, 'n_steps'),
        ({'n_steps': 10, 'ensemble': 'nve'}, 'ensemble'),
        ({'n_steps': 10, 'temperature': -1.0}, 'temperature'),
        ({'n_steps': 10, 'timestep': True}, 'timestep'),
        ({'n_steps': 10, 'pressure': None}, 'pressure'),
        ({'n_steps': 10, 'pressure': float('nan')}, 'pressure'),
        ({'n_steps': 10, 'dump_stride': 2.5}, 'dump_stride'),
        ({'n_steps': 10, 'restart_stride': -1}, 'restart_stride'),
        ({'n_steps': 10, 'kappa': 500.0}, 'unknown parameters'),
        ({'n_steps': 10, 'pressure_coupling': 'iso'}, r"pressure_coupling.*\['xy', 'xy_coupled'\]"),
    ],
)
def test_check_parameters_refuses(parameters: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_restraint_md_parameters(parameters)


def test_nvt_ignores_the_pressure_and_bad_arguments_are_refused() -> None:
    """Under NVT the pressure is unused; the seed, type map and timeout are checked."""
    nvt = generate_restraint_md_script(
        {'n_steps': 1, 'ensemble': 'nvt', 'pressure': None}, 'm.pb', TYPE_MAP, 1
    )
    assert 'npt' not in nvt
    for kwargs, message in (
        ({'seed': 0}, 'seed'),
        ({'seed': 2**31}, 'seed'),
        ({'type_map': ()}, 'type_map'),
        ({'timeout_seconds': 0}, 'timeout_seconds'),
    ):
        arguments = {
            'parameters': {'n_steps': 1},
            'model_file': 'm.pb',
            'type_map': TYPE_MAP,
            'seed': 1,
            **kwargs,
        }
        with pytest.raises(ValueError, match=message):
            generate_restraint_md_script(**arguments)


def test_restraint_script_with_an_ensemble_writes_the_model_deviation():
    """With deviation models the first model drives, all give model_devi.out at the dump stride."""
    script = generate_restraint_md_script(
        {'n_steps': 500, 'dump_stride': 50},
        'model.pb',
        TYPE_MAP,
        1234,
        deviation_model_files=['deviation_m1.pb', 'deviation_m2.pb'],
    )
    assert (
        'pair_style deepmd model.pb deviation_m1.pb deviation_m2.pb out_file model_devi.out out_freq 50'
        in lines_of(script)
    )


def test_lateral_couplings_and_the_barostat_drag() -> None:
    """``xy_coupled`` scales x and y together (z fixed) in the pull and the equilibration; ``barostat_drag``
    damps the box's oscillation of an exploration (not offered in the pull); a drag out of range is
    refused."""
    from aiida_lisei.formats.lammps import check_exploration_parameters, generate_exploration_script

    pull = lines_of(
        generate_restraint_md_script({'n_steps': 10, 'pressure_coupling': 'xy_coupled'}, 'm.pb', TYPE_MAP, 1)
    )
    assert 'fix md all npt temp 300.0 300.0 0.1 x 1.0 1.0 1.0 y 1.0 1.0 1.0 couple xy' in pull
    parameters = {**LATERAL_EQUILIBRATION, 'barostat_drag': 1.0}
    equilibration = lines_of(generate_exploration_script(parameters, ['a.pb', 'b.pb'], TYPE_MAP, 1))
    assert (
        'fix md all npt temp 300.0 300.0 0.1 x 1.0 1.0 1.0 y 1.0 1.0 1.0 couple xy drag 1.0' in equilibration
    )
    plain = lines_of(generate_exploration_script({**parameters, 'barostat_drag': 0.0}, ['a.pb'], TYPE_MAP, 1))
    assert not any('drag' in line for line in plain)
    with pytest.raises(ValueError, match='barostat_drag'):
        check_exploration_parameters({**parameters, 'barostat_drag': 5.0})
    with pytest.raises(ValueError, match='unknown parameters'):
        check_restraint_md_parameters({'n_steps': 10, 'barostat_drag': 1.0})


def test_berendsen_equilibration_script() -> None:
    """``barostat: berendsen`` writes Nosé-Hoover NVT and ``press/berendsen`` with the modulus (bar), with the
    same pressure keywords as ``fix npt``; it needs NPT and no drag; the pull has no such parameter."""
    from aiida_lisei.formats.lammps import check_exploration_parameters, generate_exploration_script

    parameters = {**LATERAL_EQUILIBRATION, 'barostat': 'berendsen'}
    lines = lines_of(generate_exploration_script(parameters, ['a.pb', 'b.pb'], TYPE_MAP, 1))
    assert 'fix md all nvt temp 300.0 300.0 0.1' in lines
    assert 'fix md_press all press/berendsen x 1.0 1.0 1.0 y 1.0 1.0 1.0 couple xy modulus 250000.0' in lines
    assert not any('fix md all npt' in line for line in lines)
    stiff_parameters = {**parameters, 'barostat_modulus': 1e6}
    stiff = lines_of(generate_exploration_script(stiff_parameters, ['a.pb'], TYPE_MAP, 1))
    assert any(line.endswith('modulus 1000000.0') for line in stiff)
    refused = [
        ({**parameters, 'barostat': 'parrinello'}, 'one of'),
        ({**parameters, 'ensemble': 'nvt', 'pressure': None}, "needs `ensemble` 'npt'"),
        ({**parameters, 'barostat_drag': 1.0}, 'nose_hoover'),
        ({**parameters, 'barostat_modulus': 0}, 'barostat_modulus'),
    ]
    for bad, message in refused:
        with pytest.raises(ValueError, match=message):
            check_exploration_parameters(bad)
    with pytest.raises(ValueError, match='unknown parameters'):
        check_restraint_md_parameters({'n_steps': 10, 'barostat': 'berendsen'})
