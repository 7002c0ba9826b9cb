"""Tests of ``DeepPotentialData`` (``lisei.deep_potential``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiida import orm
from aiida.plugins import DataFactory

from aiida_lisei.data.deep_potential import model_metadata
from aiida_lisei.workchains.dp_train import DpTrainWorkChain

DeepPotentialData = DataFactory('lisei.deep_potential')
MODEL_FILE = Path(__file__).parents[1] / 'fixtures' / 'parsers' / 'dp_train' / 'default' / 'frozen_model.pb'
METADATA = {
    'type_map': ['Li', 'P', 'S', 'Cl'],
    'descriptor_type': 'se_e2_a',
    'rcut': 5.0,
    'sel': [36, 12, 16, 22],
    'neurons': {'embedding': [4, 8], 'fitting': [16, 16]},
    'seed': 1,
    'deepmd_version': '3.2.0',
}


def test_store_load_and_write(tmp_path):
    """Model bytes and metadata survive storing; the model is written where asked; no compressed model."""
    node = DeepPotentialData(
        MODEL_FILE, training_steps=60, level_of_theory_key='tblite/GFN1-xTB/x', **METADATA
    )
    loaded = orm.load_node(node.store().pk)
    assert loaded.type_map == ['Li', 'P', 'S', 'Cl'] and loaded.rcut == 5.0 and loaded.seed == 1
    assert loaded.deepmd_backend == 'tensorflow' and loaded.compressed is False
    assert loaded.level_of_theory_key == 'tblite/GFN1-xTB/x' and loaded.training_steps == 60
    path = loaded.write_model(tmp_path, 'graph.pb')
    assert path.read_bytes() == MODEL_FILE.read_bytes()
    with pytest.raises(ValueError, match='no compressed'):
        loaded.get_model_bytes(compressed=True)
    queried = orm.QueryBuilder().append(DeepPotentialData, filters={'attributes.seed': 1}).all(flat=True)
    assert loaded.pk in {model.pk for model in queried}


@pytest.mark.engines
def test_compressed_and_deep_pot():
    """A compressed model is stored next to the frozen one; DeepPot loads the model (TF backend)."""
    node = DeepPotentialData(MODEL_FILE, compressed_model=MODEL_FILE.read_bytes(), **METADATA).store()
    assert node.compressed and node.get_model_bytes(compressed=True) == MODEL_FILE.read_bytes()
    deep_pot = node.get_deep_pot()
    assert deep_pot.get_type_map() == ['Li', 'P', 'S', 'Cl'] and deep_pot.get_rcut() == pytest.approx(5.0)


def test_missing_metadata_is_refused():
    """A model without its seed cannot be stored."""
    node = DeepPotentialData(MODEL_FILE, **{**METADATA, 'seed': None})
    with pytest.raises(ValueError, match='seed'):
        node.store()


@pytest.mark.parametrize(
    ('model', 'backend', 'message'),
    [
        (b'', 'tensorflow', 'the model file `model.pb` is empty'),
        (b'<html>404</html>', 'tensorflow', r'`model.pb` does not start as a TensorFlow GraphDef'),
        (b'\x0a\x49', 'pytorch', '`model.pth` does not start as a TorchScript'),
    ],
)
def test_garbage_model_files_are_refused(model, backend, message):
    """An empty file, an HTML error page saved as `.pb`, a TensorFlow graph named `.pth`: not stored."""
    node = DeepPotentialData(model, deepmd_backend=backend, **METADATA)
    with pytest.raises(ValueError, match=message):
        node.store()


def test_model_metadata_from_protocol():
    """The attributes are read from a DeePMD input (the paper protocol here)."""
    parameters = DpTrainWorkChain.get_protocol_inputs('paper')['dp_train']['parameters']
    metadata = model_metadata(parameters)
    assert metadata['neurons'] == {'embedding': [25, 50, 100], 'fitting': [240, 240, 240]}
    assert metadata['rcut'] == 6.0 and metadata['sel'] == [60, 20, 26, 36]
    assert metadata['training_steps'] == 400000


def test_backend_names_the_files(tmp_path):
    """A PyTorch model is stored, run and written as ``.pth`` (LAMMPS picks the backend by the extension);
    a TensorFlow one as ``.pb``; an unknown backend is refused. The bytes are a stand-in: no PyTorch model
    runs in the tested set (docs/installation.md)."""
    from aiida_lisei.data.deep_potential import model_filename, model_suffix

    node = DeepPotentialData(
        b'PK\x03\x04pytorch bytes', compressed_model=b'PK\x03\x04zip', deepmd_backend='pytorch', **METADATA
    ).store()
    assert sorted(node.base.repository.list_object_names()) == ['model.pth', 'model_compressed.pth']
    assert node.deepmd_backend == 'pytorch' and model_suffix(node) == '.pth'
    assert model_filename(node) == 'model_compressed.pth' and node.filename() == 'model.pth'
    assert node.write_model(tmp_path).name == 'model.pth'
    assert node.get_model_bytes() == b'PK\x03\x04pytorch bytes'
    tensorflow = DeepPotentialData(MODEL_FILE, **METADATA)
    assert tensorflow.filename() == 'model.pb' and model_suffix(tensorflow) == '.pb'
    assert model_suffix(orm.SinglefileData(MODEL_FILE)) == '.pb'
    with pytest.raises(ValueError, match='unknown DeePMD-kit backend `jax`'):
        DeepPotentialData(MODEL_FILE, deepmd_backend='jax', **METADATA)
