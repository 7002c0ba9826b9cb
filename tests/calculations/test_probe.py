"""Tests of ``EngineProbeCalculation`` (``lisei.probe``): the submission folder, and a real local run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiida import orm
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida.plugins import CalculationFactory

EngineProbeCalculation = CalculationFactory('lisei.probe')

#: ``lisei-probe`` of the environment that runs the tests (a venv's ``bin`` need not be on ``PATH``).
LISEI_PROBE = Path(sys.executable).parent / 'lisei-probe'


@pytest.fixture
def probe_code(aiida_code_installed) -> orm.InstalledCode:
    """This environment's ``lisei-probe`` as a code on ``localhost`` (core.local + core.direct)."""
    if not LISEI_PROBE.is_file():
        pytest.skip(f'{LISEI_PROBE} not found: install the package (pip install -e .)')
    return aiida_code_installed(
        label='lisei-probe', filepath_executable=str(LISEI_PROBE), default_calc_job_plugin='lisei.probe'
    )


def test_defaults(probe_code: orm.InstalledCode) -> None:
    """Code + metadata are enough; one machine, one MPI process, no MPI, parser ``lisei.probe``."""
    builder = probe_code.get_builder()
    assert builder.process_class is EngineProbeCalculation
    options = EngineProbeCalculation.spec().inputs['metadata']['options']
    assert options['resources'].default() == {'num_machines': 1, 'num_mpiprocs_per_machine': 1}
    assert options['withmpi'].default is False
    assert options['parser_name'].default == 'lisei.probe'
    assert {'code', 'metadata'} >= set(EngineProbeCalculation.spec().inputs.keys()) - {
        'monitors',
        'remote_folder',
    }
    assert EngineProbeCalculation.exit_codes.ERROR_OUTPUT_MISSING.status == 302
    assert EngineProbeCalculation.exit_codes.ERROR_OUTPUT_UNREADABLE.status == 310


def test_prepare_for_submission(probe_code: orm.InstalledCode, tmp_path: Path) -> None:
    """The command line is ``lisei-probe --output probe.json``; the report and stdout are retrieved."""
    process = instantiate_process(get_manager().get_runner(), EngineProbeCalculation, code=probe_code)
    calc_info = process.prepare_for_submission(Folder(str(tmp_path)))

    assert list(tmp_path.iterdir()) == []  # nothing to upload
    (code_info,) = calc_info.codes_info
    assert code_info.code_uuid == probe_code.uuid
    assert code_info.cmdline_params == ['--output', 'probe.json']
    assert code_info.withmpi is False
    assert sorted(calc_info.retrieve_list) == ['aiida.out', 'probe.json']
    assert calc_info.local_copy_list == []
    assert calc_info.remote_copy_list == []


def test_submit_script(
    probe_code: orm.InstalledCode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run writes a submit script that calls the code's executable with ``--output probe.json``."""
    monkeypatch.chdir(tmp_path)  # a dry run writes ``submit_test/`` into the working directory
    builder = probe_code.get_builder()
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    folder = Path(node.dry_run_info['folder'])
    script = (folder / '_aiidasubmit.sh').read_text()
    assert f"'{LISEI_PROBE}' '--output' 'probe.json'" in script
    assert 'mpirun' not in script


def test_run_local(probe_code: orm.InstalledCode) -> None:
    """Really run the probe through the engine on the local computer and check the parsed report."""
    results, node = run_get_node(probe_code.get_builder())

    assert node.is_finished_ok, node.exit_message
    engines = results['engines']
    assert isinstance(engines, orm.Dict)
    report = engines.get_dict()
    assert report['python'] == sys.version.split()[0]
    assert set(report['engines']) >= {'deepmd-kit', 'lammps', 'plumed', 'plumed-kernel', 'cp2k'}
    assert report['missing'] == sorted(name for name, e in report['engines'].items() if not e['available'])
    assert sorted(node.outputs.retrieved.base.repository.list_object_names()) == [
        '_scheduler-stderr.txt',
        '_scheduler-stdout.txt',
        'aiida.out',
        'probe.json',
    ]


def test_the_test_localhost_has_no_login_shell(aiida_localhost):
    """Jobs of the tests run without the user's shell start-up (see the ``aiida_localhost`` fixture)."""
    from aiida import orm

    params = aiida_localhost.get_authinfo(orm.User.collection.get_default()).get_auth_params()
    assert params['use_login_shell'] is False
