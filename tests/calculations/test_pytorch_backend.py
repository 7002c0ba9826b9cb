"""DeePMD-kit's PyTorch backend end to end, for real, in ``.venv-pytorch`` (``make pytorch``: torch as the
deepmd-kit wheel was built against, so LAMMPS's DeePMD plugin can load a ``.pth`` model).

``dp --pt`` trains and freezes two ``.pth`` models (``se_e2_a``, and DPA-1 of the DPA family, which exists
only in the PyTorch backend) and ``dp --pt test`` evaluates them; LAMMPS runs an exploration with both (the
model deviation of the pair) and a moving-restraint segment (LAMMPS + PLUMED, ``lisei-lmp-plumed``) driven
by DPA-1 with the other as its deviation. The energy LAMMPS reports at step 0 is checked against
DeePMD-kit's Python inference of the same model on the same structure.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.build import bulk
from local_codes import local_code

from aiida_lisei.calculations.dp_test import DpTestCalculation
from aiida_lisei.calculations.dp_train import DpTrainCalculation
from aiida_lisei.calculations.exploration import ExplorationCalculation
from aiida_lisei.calculations.restraint_md import RestraintMdCalculation
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.engines.probe import find_plumed_kernel
from aiida_lisei.formats.lammps import parse_log
from aiida_lisei.workchains.dp_train import DpTrainWorkChain

pytestmark = pytest.mark.engines

PYTORCH_BIN = Path(__file__).parents[2] / '.venv-pytorch' / 'bin'
INSTALL = "`make pytorch` installs DeePMD-kit's PyTorch backend with LAMMPS in .venv-pytorch"
TRAINING_SET = Path(__file__).parents[1] / 'fixtures' / 'dp_training_set'

#: DeePMD-kit's Python inference in the PyTorch environment: the energy (eV) of one frame.
EVALUATE = """
import json, sys
import numpy as np
from deepmd.infer import DeepPot
frame = json.load(sys.stdin)
energy, _, _ = DeepPot(frame['model']).eval(
    np.array(frame['positions']).reshape(1, -1), np.array(frame['cell']).reshape(1, 9), frame['types']
)
print(json.dumps(float(energy.ravel()[0])))
"""


@pytest.fixture(scope='module')
def pytorch_code(tmp_path_factory):
    """Return a factory: console script ``name`` of ``.venv-pytorch`` as a code on a computer of its own
    (one per script, made once)."""
    codes = {}

    def factory(name: str, prepend_text: str = '') -> orm.InstalledCode:
        if name not in codes:
            executable = PYTORCH_BIN / name
            codes[name] = local_code(tmp_path_factory, executable, install=INSTALL, prepend_text=prepend_text)
        return codes[name]

    return factory


#: A small DPA-1 descriptor (attention over neighbours and a type embedding; PyTorch backend): the DPA family.
DPA1_DESCRIPTOR = {
    'type': 'dpa1',
    'sel': 60,
    'rcut': 5.0,
    'rcut_smth': 0.5,
    'neuron': [8, 16],
    'axis_neuron': 4,
    'tebd_dim': 8,
    'attn': 16,
    'attn_layer': 1,
    'type_one_side': True,
}


@pytest.fixture(scope='module')
def pytorch_models(pytorch_code) -> dict[str, orm.Data]:
    """Two PyTorch models trained for real with ``dp --pt`` (20 steps) on the GFN1-xTB fixture set of bcc
    Li16 and Li2S (type map Li P S Cl): ``se_e2_a`` (seed 1) and DPA-1 (seed 2), each frozen to ``.pth``."""
    code = pytorch_code('dp')
    training_set = TrainingSetData.from_deepmd_npy(sorted(p for p in TRAINING_SET.iterdir() if p.is_dir()))
    parameters = DpTrainWorkChain.get_builder_from_protocol(
        code, training_set, overrides={'dp_train': {'parameters': {'training': {'numb_steps': 20}}}}
    ).dp_train.parameters.get_dict()
    parameters['training'].update(disp_freq=10, save_freq=20)
    dpa1 = {**parameters, 'model': {**parameters['model'], 'descriptor': DPA1_DESCRIPTOR}}
    models = {}
    for name, seed, inputs in (('se_e2_a', 1, parameters), ('dpa1', 2, dpa1)):
        _, node = run_get_node(
            DpTrainCalculation,
            code=code,
            training_set=training_set,
            parameters=orm.Dict(inputs),
            seed=orm.Int(seed),
            settings=orm.Dict({'backend': 'pytorch'}),
        )
        assert node.is_finished_ok, (node.exit_status, node.exit_message)
        models[name] = node.outputs.model
    return models


def evaluate_energy(model, atoms) -> float:
    """Energy (eV) of ``atoms`` (ASE) by DeePMD-kit's Python inference of ``model`` in .venv-pytorch."""
    type_map = model.type_map
    with model.as_path() as path:
        frame = {
            'model': str(path),
            'positions': atoms.positions.tolist(),
            'cell': atoms.cell.array.tolist(),
            'types': [type_map.index(symbol) for symbol in atoms.get_chemical_symbols()],
        }
        result = subprocess.run(
            [str(PYTORCH_BIN / 'python'), '-c', EVALUATE],
            input=json.dumps(frame),
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
    return json.loads(result.stdout.splitlines()[-1])


def test_models_are_pytorch_and_dp_test_runs(pytorch_code, pytorch_models):
    """Both models are PyTorch ``.pth`` files (TorchScript archives) that say their descriptor, and ``dp --pt
    test`` evaluates each."""
    test_set = TrainingSetData.from_deepmd_npy(TRAINING_SET / 'bcc_li').store()
    for descriptor, model in pytorch_models.items():
        assert model.deepmd_backend == 'pytorch' and model.filename() == 'model.pth'
        assert model.descriptor_type == {'dpa1': 'se_atten'}.get(descriptor, descriptor)  # DeePMD's name
        assert model.base.repository.get_object_content('model.pth', 'rb')[:4] == b'PK\x03\x04'
        results, node = run_get_node(
            DpTestCalculation, code=pytorch_code('dp'), model=model, test_set=test_set
        )
        assert node.is_finished_ok, (node.exit_status, node.exit_message)
        assert (
            0 < results['output_parameters']['rmse_f'] < 5.0
        )  # eV/Å: finite, a model that learned something
    assert pytorch_models['dpa1'].sel == 60  # DPA-1 counts its neighbours over all types


def test_exploration_with_pytorch_models(pytorch_code, pytorch_models):
    """LAMMPS explores bcc Li16 with the two ``.pth`` models, DPA-1 driving: the pair disagrees (deviation
    > 0), and the step-0 energy of the driving model equals DeePMD-kit's Python inference of it."""
    atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
    builder = ExplorationCalculation.get_builder()
    builder.code = pytorch_code('lmp')
    builder.structure = orm.StructureData(ase=atoms)
    builder.models = {'m1': pytorch_models['dpa1'], 'm2': pytorch_models['se_e2_a']}
    builder.parameters = orm.Dict({'temperature': 300, 'n_steps': 20, 'stride': 10})
    builder.seed = orm.Int(5)
    _, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    script = node.base.repository.get_object_content('input.lammps')
    assert 'pair_style deepmd model_0.pth model_1.pth out_file model_devi.out out_freq 10' in script
    deviation = node.outputs.model_devi
    assert deviation.get_array('step').tolist() == [0, 10, 20]
    assert np.all(np.isfinite(deviation.get_array('max_devi_f')))
    assert deviation.get_array('max_devi_f').max() > 0  # two seeds, two models
    log = parse_log(node.outputs.retrieved.base.repository.get_object_content('log.lammps'))
    reference = evaluate_energy(pytorch_models['dpa1'], atoms)
    assert float(log.thermo['PotEng'][0]) == pytest.approx(reference, abs=1e-4 * len(atoms))


def test_restraint_segment_with_pytorch_models(pytorch_code, pytorch_models, small_sandwich):
    """A moving-restraint segment (LAMMPS + PLUMED) of the 88-atom sandwich driven by the DPA-1 ``.pth``
    model, the ``se_e2_a`` one as its deviation: COLVAR, frames and the ensemble's deviation at every dumped
    step."""
    kernel = find_plumed_kernel()
    assert kernel is not None, 'no PLUMED kernel: make plumed-kernel'
    builder = RestraintMdCalculation.get_builder()
    builder.code = pytorch_code('lisei-lmp-plumed', prepend_text=f'export PLUMED_KERNEL={kernel}')
    builder.structure = small_sandwich
    builder.model = pytorch_models['dpa1']
    builder.deviation_models = {'se_e2_a': pytorch_models['se_e2_a']}
    builder.parameters = orm.Dict(
        {'n_steps': 20, 'thermo_stride': 10, 'dump_stride': 10, 'restart_stride': 20}
    )
    builder.restraint = orm.Dict(
        {'kappa': 500.0, 'd_max': 5.0, 'anode_layers': 2, 'at_start': 0.0, 'at_end': 0.5, 'step_end': 100}
    )
    builder.seed = orm.Int(4321)
    builder.guards = orm.Dict({'enabled': False})  # a 20-step model of Li and Li2S: measured, not enforced
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    script = node.base.repository.get_object_content('input.lammps')
    assert 'pair_style deepmd model.pth deviation_se_e2_a.pth' in script
    assert results['colvar'].get_array('time').tolist() == pytest.approx([0.0, 0.01, 0.02])
    assert results['trajectory'].get_stepids().tolist() == [0, 10, 20]
    deviation = results['model_deviation']
    assert deviation.get_array('step').tolist() == [0, 10, 20]
    assert (
        np.all(np.isfinite(deviation.get_array('max_devi_f'))) and deviation.get_array('max_devi_f').max() > 0
    )
