"""Shared fixtures: a throw-away SQLite + ZeroMQ profile for the unit tests.

The production-profile tests (PostgreSQL + RabbitMQ + daemon, SSH + Slurm) live in
``tests/integration`` and bring their own profile (see its conftest); they run in a
separate pytest invocation (``make test`` runs both).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.plugins import ParserFactory
from aiida.plugins.entry_point import format_entry_point_string
from local_codes import ONE_THREAD, VENV_BIN

pytest_plugins = ['aiida.tools.pytest_fixtures']

#: A test module whose top-level imports need the engines says so with this line (read, not imported).
ENGINES_MODULE_MARK = 'pytestmark = pytest.mark.engines'


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--core-only``: the tests a core install (no ``[engines]``, no ``[tests]`` extra) can run."""
    parser.addoption(
        '--core-only',
        action='store_true',
        help='leave out the tests marked `engines` (modules with that pytestmark are not even imported)',
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``--core-only``, do not import the test modules marked ``engines`` as a whole."""
    if (
        config.getoption('--core-only')
        and collection_path.suffix == '.py'
        and ENGINES_MODULE_MARK in collection_path.read_text()
    ):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--core-only``, deselect (not skip) the tests marked ``engines``."""
    if not config.getoption('--core-only'):
        return
    kept = [item for item in items if item.get_closest_marker('engines') is None]
    deselected = [item for item in items if item.get_closest_marker('engines') is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope='session', autouse=True)
def aiida_profile(aiida_config, aiida_profile_factory):
    """Embedded profile (SQLite + ZeroMQ broker): ``run`` and ``submit`` both work, no services."""
    with aiida_profile_factory(aiida_config, broker_backend='core.zeromq') as profile:
        yield profile


#: The one root of the tests' data: models, training sets, VASP registry, and the parser fixtures under
#: ``parsers/<calc>/<case>/`` (real outputs, with the scripts that regenerate them).
FIXTURES = Path(__file__).parent / 'fixtures'


#: The first tiny DeePMD test model (type map Li P S Cl, trained on bcc Li only: stable, not physical).
TINY_MODEL = FIXTURES / 'models' / 'model_1.pb'


@pytest.fixture(scope='session')
def small_sandwich(aiida_profile):
    """The smallest sandwich of the paper's shape: 1x1x1 electrolyte cell, 2 anode and 2 source Li layers
    (88 atoms, lateral cell 10.25 Å), built and stored by the structure calcfunctions."""
    from aiida_lisei.structures.functions import argyrodite_node, sandwich_node

    electrolyte = argyrodite_node(seed=20241125)
    return sandwich_node(
        electrolyte,
        electrolyte_repeat_xy=1,
        electrolyte_repeat_z=1,
        anode_layers=2,
        source_layers=2,
        vacuum=12.0,
    )


@pytest.fixture
def tiny_model() -> orm.SinglefileData:
    """:data:`TINY_MODEL` as an unstored ``SinglefileData``."""
    return orm.SinglefileData(TINY_MODEL)


@pytest.fixture
def tiny_deep_potential():
    """Return a factory: tiny test model ``index`` (1 to 4; Li P S Cl) as a stored ``DeepPotentialData``."""
    import json

    from aiida_lisei.data.deep_potential import DeepPotentialData, model_metadata

    def factory(index: int = 1) -> DeepPotentialData:
        metadata = model_metadata(json.loads((FIXTURES / 'models' / f'input_{index}.json').read_text()))
        model = FIXTURES / 'models' / f'model_{index}.pb'
        return DeepPotentialData(model, deepmd_version='3.2.0', **metadata).store()

    return factory


@pytest.fixture
def test_set():
    """The tiny tblite training set (8 bcc Li16 + 6 Li2S frames; ``fixtures/dp_training_set``), stored."""
    from aiida_lisei.data.training_set import TrainingSetData

    directory = FIXTURES / 'dp_training_set'
    return TrainingSetData.from_deepmd_npy(sorted(p for p in directory.iterdir() if p.is_dir())).store()


@pytest.fixture
def parser_model():
    """Return a factory: the frozen model of the ``dp_train`` parser fixture (Li P S Cl, se_e2_a, rcut 5 Å)
    as an unstored ``DeepPotentialData`` with the given ``level_of_theory_key``."""
    from fixture_models import parser_fixture_model

    return parser_fixture_model


@pytest.fixture
def model(test_set, parser_model):
    """The parser fixture's frozen model, trained on ``test_set`` (its level of theory), stored."""
    return parser_model(test_set.level_of_theory_key).store()


@pytest.fixture
def pytorch_stand_in():
    """An unstored PyTorch-backend ``DeepPotentialData`` (DPA-3 metadata) whose bytes are a stand-in: for the
    submission side only (file names, commands), no PyTorch model runs in the tested set."""
    from aiida_lisei.data.deep_potential import DeepPotentialData

    return DeepPotentialData(
        b'PK\x03\x04stand-in',  # starts as a TorchScript (zip) archive does
        type_map=['Li', 'P', 'S', 'Cl'],
        descriptor_type='dpa3',
        rcut=6.0,
        sel='auto',
        neurons={},
        seed=1,
        deepmd_version='3.2.0',
        deepmd_backend='pytorch',
    )


@pytest.fixture
def loose_guards() -> dict[str, float]:
    """Guard thresholds (``md.guards``) that no guard fails on the tiny models' blown-up runs; a test puts
    the guard it checks back."""
    return {
        'lateral_cell': 0.99,
        'min_distance': 0.0,
        'lost_atoms': 1000,
        'temperature': 1e6,
        'pressure': 1e9,
        'energy_drift': 1e6,
        'deviation': 1.0,
    }


@pytest.fixture
def one_thread_code(venv_code):
    """Return a factory: console script ``name`` as a code for ``plugin`` running on one thread."""
    return lambda name, plugin: venv_code(name, plugin, prepend_text=ONE_THREAD)


@pytest.fixture
def li16():
    """Return a factory: bcc Li16 (a = 3.42 Å) as ``StructureData``, displaced by seeded normal noise (Å)."""
    import numpy as np
    from ase.build import bulk

    def factory(amplitude: float = 0.0, seed: int = 7) -> orm.StructureData:
        atoms = bulk('Li', 'bcc', a=3.42, cubic=True).repeat(2)
        atoms.positions += np.random.default_rng(seed).normal(scale=amplitude, size=atoms.positions.shape)
        return orm.StructureData(ase=atoms)

    return factory


@pytest.fixture
def restraint_code(venv_code) -> orm.InstalledCode:
    """``lisei-lmp-plumed`` of this environment as a ``lisei.restraint_md`` code, one thread."""
    return venv_code('lisei-lmp-plumed', 'lisei.restraint_md', prepend_text=ONE_THREAD)


@pytest.fixture
def aiida_localhost(aiida_localhost):
    """aiida-core's localhost computer, configured without a login shell (as `aiida-lisei setup localhost`):
    a login shell runs the user's start-up files for every scheduler command, and a `pyenv rehash` lock left
    by a daemon killed mid-command (the daemon-kill tests) made each command wait 60 s."""
    aiida_localhost.configure(use_login_shell=False)
    return aiida_localhost


@pytest.fixture
def venv_code(aiida_code_installed):
    """Return a factory: this environment's console script ``name`` as an installed code on localhost."""

    def factory(name: str, plugin: str, prepend_text: str = '') -> orm.InstalledCode:
        executable = VENV_BIN / name
        if not executable.is_file():
            pytest.skip(f'{executable} not found: install the package (pip install -e .)')
        return aiida_code_installed(
            label=name,
            filepath_executable=str(executable),
            default_calc_job_plugin=plugin,
            prepend_text=prepend_text,
        )

    return factory


#: Name of the POTCAR family of aiida-vasp's dummy test POTCARs (``fixtures/vasp/potcars``).
POTCAR_FAMILY = 'lisei-test-dummy'


@pytest.fixture
def potential_family() -> str:
    """Upload aiida-vasp's dummy POTCARs (P, S, Zn, and Li_sv, Cl made from them) as a family; its name."""
    from aiida_vasp.data.potcar import PotcarData

    if PotcarData.get_potcar_group(POTCAR_FAMILY) is None:
        PotcarData.upload_potcar_family(
            str(FIXTURES / 'vasp' / 'potcars'), POTCAR_FAMILY, 'dummy POTCARs', stop_if_existing=False
        )
    return POTCAR_FAMILY


#: CP2K of Debian's `cp2k` package (2023.1).
CP2K = Path('/usr/bin/cp2k.psmp')


@pytest.fixture
def cp2k_code(aiida_computer_local, aiida_code_installed) -> orm.InstalledCode:
    """CP2K 2023.1 on a local computer, polled without delay, OpenMPI allowed to run as root."""
    if not CP2K.is_file() or shutil.which('mpirun') is None:
        pytest.skip('CP2K or mpirun not installed')
    computer = aiida_computer_local()
    computer.set_minimum_job_poll_interval(0.0)
    computer.configure(safe_interval=0.0)
    return aiida_code_installed(
        computer=computer,
        filepath_executable=str(CP2K),
        default_calc_job_plugin='cp2k',
        prepend_text='export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1',
    )


def _link_inputs(node: orm.CalcJobNode, inputs: Mapping[str, Any], prefix: str = '') -> None:
    """Link ``inputs`` (nested dicts are namespaces: ``structures__key``) to ``node``, storing them."""
    for label, value in inputs.items():
        if isinstance(value, Mapping):
            _link_inputs(node, value, f'{prefix}{label}__')
        else:
            node.base.links.add_incoming(value.store(), LinkType.INPUT_CALC, f'{prefix}{label}')


@pytest.fixture
def generate_calc_job_node(aiida_localhost):
    """Return a factory of a finished ``CalcJobNode`` with inputs and retrieved files, for parser tests.

    ``factory(entry_point, inputs=None, retrieved=None, *, options=None, exit_status=None, exclude=(),
    computer=True, outputs=None, finished=False, caller=None)``: ``entry_point`` of the CalcJob
    (``lisei.tblite``, ``cp2k``, ...); ``inputs`` nodes by link label (nested dicts for namespaces);
    ``retrieved`` either ``{name: str | bytes}`` or a folder of real outputs (files in ``exclude`` left
    out; ``None``: no ``retrieved`` output); ``options`` set on the node (one machine, one rank by
    default); ``exit_status`` as the scheduler (or, with ``finished``, the parser) set it; ``outputs``
    further output nodes by link label (a handler test's ``remote_folder``, say); ``caller`` a stored
    ``(WorkflowNode, call link label)`` that called it (a work chain's provenance without running it).
    """

    def factory(
        entry_point: str,
        inputs: Mapping[str, Any] | None = None,
        retrieved: Mapping[str, str | bytes] | Path | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        exit_status: int | None = None,
        exclude: tuple[str, ...] = (),
        computer: bool = True,
        outputs: Mapping[str, orm.Data] | None = None,
        finished: bool = False,
        caller: tuple[orm.WorkflowNode, str] | None = None,
    ) -> orm.CalcJobNode:
        node = orm.CalcJobNode(
            computer=aiida_localhost if computer else None,
            process_type=format_entry_point_string('aiida.calculations', entry_point),
        )
        for name, value in {
            'resources': {'num_machines': 1, 'num_mpiprocs_per_machine': 1},
            **(options or {}),
        }.items():
            node.set_option(name, value)
        _link_inputs(node, inputs or {})
        if finished:
            node.set_process_state('finished')
        if caller is not None:
            node.base.links.add_incoming(caller[0], LinkType.CALL_CALC, caller[1])
        node.store()
        if exit_status is not None:
            node.set_exit_status(exit_status)
        outputs = dict(outputs or {})
        if retrieved is not None:
            folder = outputs['retrieved'] = orm.FolderData()
            if isinstance(retrieved, Path):
                for path in sorted(retrieved.iterdir()):
                    if path.is_file() and path.name not in exclude:
                        folder.base.repository.put_object_from_file(str(path), path.name)
            else:
                for name, content in retrieved.items():
                    data = content.encode() if isinstance(content, str) else content
                    folder.base.repository.put_object_from_bytes(data, name)
        for label, output in outputs.items():
            output.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label=label)
            output.store()
        return node

    return factory


@pytest.fixture
def generate_parser():
    """Return a factory: the parser class of an entry point, e.g. ``generate_parser('lisei.tblite')``."""
    return ParserFactory


@pytest.fixture
def run_cli():
    """Invoke ``aiida-lisei`` in this process (on the test profile); return the click result.

    ``aiida.common.log.CLI_ACTIVE`` is held ``True`` during the call: the root group is a
    ``VerdiCommandGroup``, whose ``--verbosity`` callback otherwise turns the whole test process's AiiDA
    logging into CLI logging (handlers on the runner's streams, closed after the call).
    """
    from aiida.common import log

    from aiida_lisei.cli import cmd_root

    def run(*args: str):
        active = log.CLI_ACTIVE
        log.CLI_ACTIVE = True
        try:
            from click.testing import CliRunner

            return CliRunner().invoke(cmd_root, [str(arg) for arg in args], catch_exceptions=False)
        finally:
            log.CLI_ACTIVE = active

    return run
