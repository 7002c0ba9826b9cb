"""A builder regression test per work chain protocol (as aiida-quantumespresso's protocol tests).

Each protocol's builder, on small stand-in inputs, is serialised to node *values* (no PKs or UUIDs) and
compared with the YAML next to this module (``pytest-regressions``' ``data_regression``; regenerate with
``--force-regen`` after a deliberate change of a protocol). ``lisei.atomic_models`` and ``lisei.vasp.label``
have theirs beside their own tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiida import orm
from ase.build import bulk

from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain
from aiida_lisei.workchains.cp2k_label import Cp2kLabelWorkChain
from aiida_lisei.workchains.cp2k_md import Cp2kMdWorkChain
from aiida_lisei.workchains.dp_train import DpTrainWorkChain
from aiida_lisei.workchains.initial_data import InitialDataWorkChain
from aiida_lisei.workchains.initial_data_chgnet import InitialDataChgnetWorkChain
from aiida_lisei.workchains.label import LabelWorkChain
from aiida_lisei.workchains.model_validation import ModelValidationWorkChain
from aiida_lisei.workchains.nucleation_analysis import NucleationAnalysisWorkChain
from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain

FIXTURES = Path(__file__).parents[2] / 'fixtures'


def serialize(value: Any) -> Any:
    """The builder's inputs as plain values: ``Dict`` contents, base-type values, summaries of the rest."""
    if isinstance(value, Mapping):
        return {str(key): serialize(item) for key, item in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [serialize(item) for item in value]
    if isinstance(value, orm.Dict):
        return serialize(value.get_dict())
    if isinstance(value, orm.List):
        return serialize(value.get_list())
    if isinstance(value, orm.BaseType):
        return value.value
    if isinstance(value, orm.AbstractCode):
        return f'code {value.label}'
    if isinstance(value, orm.StructureData):
        return f'structure {value.get_formula(mode="hill")}, {len(value.sites)} atoms'
    if isinstance(value, orm.TrajectoryData):
        return f'trajectory {value.numsteps} frames of {value.numsites} atoms'
    if isinstance(value, TrainingSetData):
        return f'training set {value.nframes} frames at {value.level_of_theory_key}'
    if isinstance(value, orm.Data):
        return type(value).__name__
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def inputs_of(builder) -> dict[str, Any]:
    """The inputs set on ``builder``, serialised."""
    return serialize(builder._inputs(prune=True))


@pytest.fixture
def code(aiida_code_installed):
    """A stand-in code (builders only)."""
    return aiida_code_installed(label='stand-in', filepath_executable='/bin/true')


@pytest.fixture
def li16() -> orm.StructureData:
    """bcc Li16, a = 3.42 Å."""
    return orm.StructureData(ase=bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2))


@pytest.fixture
def training_set() -> TrainingSetData:
    """The tiny tblite training set of the fixtures."""
    folder = FIXTURES / 'dp_training_set'
    return TrainingSetData.from_deepmd_npy(sorted(path for path in folder.iterdir() if path.is_dir()))


@pytest.mark.parametrize('protocol', ['gfn1_xtb', 'gfn1_xtb_insulator', 'pbe'])
def test_cp2k_label(code, li16, protocol, data_regression):
    """``lisei.cp2k.label``: the FORCE_EVAL of each protocol on bcc Li16."""
    builder = Cp2kLabelWorkChain.get_builder_from_protocol(code, li16, protocol=protocol, system_label='li16')
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['gfn1_xtb', 'pbe'])
def test_cp2k_md(code, li16, protocol, data_regression):
    """``lisei.cp2k.md``: an NVT run of bcc Li16."""
    parameters = {'task': 'md', 'md': {'n_steps': 10, 'temperature': 300.0}}
    builder = Cp2kMdWorkChain.get_builder_from_protocol(code, li16, parameters, seed=7, protocol=protocol)
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'precise'])
def test_label(code, li16, protocol, data_regression):
    """``lisei.label`` with tblite."""
    builder = LabelWorkChain.get_builder_from_protocol(
        code, {'li16': li16}, system_label='li16', protocol=protocol
    )
    data_regression.check(inputs_of(builder))


def test_label_chgnet(code, li16, data_regression):
    """``lisei.label`` with CHGNet (``demo``)."""
    builder = LabelWorkChain.get_builder_from_protocol(
        code, {'li16': li16}, system_label='li16', engine='chgnet'
    )
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'paper'])
def test_dp_train(code, training_set, protocol, data_regression):
    """``lisei.dp_train``."""
    builder = DpTrainWorkChain.get_builder_from_protocol(code, training_set, protocol=protocol, seed=3)
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'paper'])
def test_initial_data(code, li16, protocol, data_regression):
    """``lisei.initial_data`` on bcc Li16."""
    builder = InitialDataWorkChain.get_builder_from_protocol(
        code, code, {'bcc_lithium': li16}, protocol=protocol
    )
    data_regression.check(inputs_of(builder))


def test_initial_data_chgnet(code, li16, data_regression):
    """``lisei.initial_data.chgnet`` (``demo_chgnet``) on bcc Li16 and an interface (its overrides)."""
    builder = InitialDataChgnetWorkChain.get_builder_from_protocol(
        code, code, {'bcc_lithium': li16, 'interface': li16}, protocol='demo_chgnet'
    )
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'paper'])
def test_concurrent_learning(code, training_set, li16, protocol, data_regression):
    """``lisei.concurrent_learning`` of bcc Li16 (the schedule keeps the systems given)."""
    builder = ConcurrentLearningWorkChain.get_builder_from_protocol(
        code, code, code, training_set, {'bcc_lithium': li16}, protocol=protocol
    )
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'paper'])
def test_restraint_md(code, small_sandwich, tiny_model, protocol, data_regression):
    """``lisei.restraint_md`` on the smallest sandwich: every restraint parameter, R0 included."""
    builder = RestraintMdWorkChain.get_builder_from_protocol(
        code, small_sandwich, tiny_model, protocol=protocol
    )
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'paper'])
def test_nucleation_analysis(code, small_sandwich, protocol, data_regression):
    """``lisei.nucleation_analysis`` of a two-frame trajectory of the smallest sandwich."""
    positions = np.array([site.position for site in small_sandwich.sites])
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=[site.kind_name for site in small_sandwich.sites],
        positions=np.stack([positions, positions]),
        stepids=np.array([0, 100]),
        cells=np.stack([np.array(small_sandwich.cell)] * 2),
        times=np.array([0.0, 0.1]),
    )
    builder = NucleationAnalysisWorkChain.get_builder_from_protocol(
        code, trajectory, small_sandwich, protocol=protocol
    )
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo'])  # `paper` labels with VASP: needs a POTCAR family
def test_model_validation(code, li16, protocol, data_regression, parser_model):
    """``lisei.model_validation`` of the fixture model."""
    model = parser_model('tblite/GFN1-xTB/0000000000000000')
    builder = ModelValidationWorkChain.get_builder_from_protocol(
        code, code, code, model, li16, protocol=protocol, seed=3
    )
    data_regression.check(inputs_of(builder))


@pytest.mark.parametrize('protocol', ['demo', 'pbe', 'paper'])
def test_electronic_structure(code, li16, tiny_model, potential_family, protocol, data_regression):
    """``lisei.electronic_structure``: a DP relaxation, then CP2K (xTB, PBE) or VASP (paper)."""
    from aiida_lisei.workchains.electronic_structure import ElectronicStructureWorkChain

    structures = {'sei': li16, 'bulk': li16} if protocol == 'paper' else {'li16': li16}
    builder = ElectronicStructureWorkChain.get_builder_from_protocol(
        code,
        structures,
        protocol=protocol,
        lammps_code=code,
        model=tiny_model,
        potential_family=potential_family,
    )
    inputs = inputs_of(builder)
    if protocol == 'paper':  # the SI's meshes: 1x1x3 for the SEI, 2x2x1 for bulk Li6PS5Cl
        assert builder.kpoints['sei'].get_kpoints_mesh()[0] == [1, 1, 3]
        assert builder.kpoints['bulk'].get_kpoints_mesh()[0] == [2, 2, 1]
    data_regression.check(inputs)
