"""Tests of ``lisei.chgnet`` and ``lisei.chgnet_md``: real CHGNet runs through AiiDA on a few frames.

The labels must equal a direct evaluation with CHGNet's own ASE calculator (eV, eV/Å, virial =
``-stress * V`` in eV) and carry CHGNet's own level of theory, which never mixes with tblite's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory
from ase import Atoms
from ase.build import bulk

from aiida_lisei.data.level_of_theory import LevelOfTheoryError, check_same_level
from aiida_lisei.engines.calculators import CALCULATORS

ChgnetCalculation = CalculationFactory('lisei.chgnet')
ChgnetMdCalculation = CalculationFactory('lisei.chgnet_md')


def li2s(amplitude: float = 0.0, seed: int = 0) -> Atoms:
    """Antifluorite Li2S, conventional cell (Li8S4, a = 5.70 Å), displaced by a seeded normal noise (Å)."""
    atoms = bulk('SLi2', 'fluorite', a=5.70, cubic=True)
    atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
    return atoms


def test_spec_and_validation(venv_code) -> None:
    """Same exit codes as ``lisei.tblite``; CHGNet's own parameters, parser and element range."""
    assert dict(ChgnetCalculation.exit_codes) == dict(CalculationFactory('lisei.tblite').exit_codes)
    options = ChgnetCalculation.spec().inputs['metadata']['options']
    assert options['parser_name'].default == 'lisei.chgnet'
    assert ChgnetMdCalculation.exit_codes.ERROR_CALCULATOR_FAILED.status == 411
    code = venv_code('lisei-chgnet', 'lisei.chgnet')
    spec = ChgnetCalculation.spec().inputs
    inputs = {'code': code, 'structures': {'a': orm.StructureData(ase=li2s())}, 'system_label': orm.Str('x')}
    assert spec.validate({**inputs, 'parameters': orm.Dict({'model': '0.3.0'})}) is None
    bad = spec.validate({**inputs, 'parameters': orm.Dict({'method': 'GFN1-xTB'})})
    assert 'unknown chgnet parameters' in bad.message
    uranium = {'a': orm.StructureData(ase=Atoms('LiU', [[0, 0, 0], [2, 2, 2]], cell=[4] * 3, pbc=True))}
    assert spec.validate({**inputs, 'structures': uranium, 'parameters': orm.Dict()}) is None  # Z <= 94


def test_label_run(venv_code, tmp_path: Path) -> None:
    """Two rattled Li2S frames labelled by ``lisei-chgnet``: the CHGNet level and CHGNet's own numbers."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    code = venv_code('lisei-chgnet', 'lisei.chgnet')
    frames = [li2s(0.05, seed=3), li2s(0.05, seed=4)]
    inputs = {
        'code': code,
        'structures': {f'frame_{index}': orm.StructureData(ase=atoms) for index, atoms in enumerate(frames)},
        'parameters': orm.Dict({}),
        'system_label': orm.Str('li2s'),
    }
    process = instantiate_process(get_manager().get_runner(), ChgnetCalculation, **inputs)
    process.prepare_for_submission(Folder(str(tmp_path)))
    assert json.loads((tmp_path / 'parameters.json').read_text()) == {'model': '0.3.0', 'threads': 1}

    results, node = run_get_node(ChgnetCalculation, **inputs)
    assert node.is_finished_ok, node.exit_message
    labels = results['labels']
    assert labels.level_of_theory == {
        'engine': 'chgnet',
        'method': 'CHGNet-0.3.0',
        'version': CALCULATORS['chgnet'].version(),
        'settings': {},
    }
    with pytest.raises(LevelOfTheoryError):
        check_same_level(labels.level_of_theory, CALCULATORS['tblite'].level_of_theory({}))
    system = labels.get_system('li2s')
    model = CHGNet.load(model_name='0.3.0', verbose=False)
    for index, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = CHGNetCalculator(model, use_device='cpu')
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        assert system.energies[index] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(system.forces[index], atoms.get_forces(), atol=1e-5)
        np.testing.assert_allclose(system.virials[index], virial, atol=1e-4)
        assert np.abs(system.forces[index]).max() > 0.1  # the frames are not trivially at equilibrium


def test_md_run(venv_code) -> None:
    """5 NVT steps of Li2S with ``lisei-chgnet-md``: a trajectory of 6 frames, exit 0, CHGNet recorded."""
    code = venv_code('lisei-chgnet-md', 'lisei.chgnet_md')
    parameters = {'task': 'md', 'chgnet': {'model': '0.3.0'}, 'md': {'n_steps': 5, 'stride': 1}}
    inputs = {
        'code': code,
        'structure': orm.StructureData(ase=li2s()),
        'parameters': orm.Dict(parameters),
        'seed': orm.Int(5),
    }
    results, node = run_get_node(ChgnetMdCalculation, **inputs)
    assert node.is_finished_ok, node.exit_message
    trajectory = results['trajectory']
    assert trajectory.numsteps == 6 and trajectory.get_array('stresses').shape == (6, 3, 3)
    assert trajectory.get_array('temperatures')[0] == pytest.approx(300.0)
    summary = results['output_parameters'].get_dict()
    assert summary['calculator'] == 'chgnet' and summary['version'] == CALCULATORS['chgnet'].version()
    assert abs(summary['conserved_energy_drift']) < 0.01
    wrong = ChgnetMdCalculation.spec().inputs.validate(
        {**inputs, 'parameters': orm.Dict({'task': 'md', 'tblite': {}})}
    )
    assert 'do not apply to a run with chgnet' in wrong.message
