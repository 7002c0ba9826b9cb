"""``aiida-lisei workflow launch``: every work chain from its protocol; atomic-models really runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from aiida import orm

from aiida_lisei.data.deep_potential import DeepPotentialData
from aiida_lisei.data.training_set import TrainingSetData

FIXTURES = Path(__file__).parents[1] / 'fixtures'


@pytest.fixture
def codes(aiida_code_installed):
    """Stand-in codes (``/bin/true``) with the default plugins ``aiida-lisei setup localhost`` gives (labels
    made unique: the setup tests register the real ones on the same profile)."""
    suffix = uuid.uuid4().hex[:8]
    plugins = {
        'dp': 'lisei.dp_train',
        'lmp': 'lisei.exploration',
        'lisei-lmp-plumed': 'lisei.restraint_md',
        'lisei-tblite': 'lisei.tblite',
        'lisei-tblite-md': 'lisei.tblite_md',
        'lisei-chgnet': 'lisei.chgnet',
        'lisei-chgnet-md': 'lisei.chgnet_md',
        'lisei-qeq': 'lisei.qeq',
    }
    return {
        name: aiida_code_installed(
            label=f'{name}-{suffix}', default_calc_job_plugin=plugin, filepath_executable='/bin/true'
        )
        for name, plugin in plugins.items()
    }


@pytest.fixture
def li16(li16) -> orm.StructureData:
    """Stored bcc Li16."""
    return li16().store()


@pytest.fixture
def training_set() -> TrainingSetData:
    """The tiny tblite training set of the fixtures, stored."""
    folder = FIXTURES / 'dp_training_set'
    return TrainingSetData.from_deepmd_npy(sorted(path for path in folder.iterdir() if path.is_dir())).store()


@pytest.fixture
def model(parser_model) -> DeepPotentialData:
    """The fixture model of the parser tests, stored."""
    return parser_model('tblite/GFN1-xTB/0000000000000000').store()


def dry_run(run_cli, *args) -> dict:
    """Run ``workflow launch ... --dry-run``; return the inputs it reports."""
    result = run_cli('workflow', 'launch', *args, '--dry-run')
    assert result.exit_code == 0, result.output
    assert 'inputs valid, nothing launched' in result.output
    return json.loads(result.output[result.output.index('{') :])


def test_atomic_models_runs(aiida_profile, tmp_path):
    """``aiida-lisei -p <profile> workflow launch atomic-models --protocol demo`` (a child process, the
    profile chosen on the root group) runs the work chain, with the smallest interface and sandwich from an
    ``--overrides`` YAML file; its four structures are outputs."""
    from aiida.manage.configuration import get_config

    small = {'electrolyte_repeat_z': 1, 'anode_layers': 2}
    overrides = tmp_path / 'overrides.yaml'
    overrides.write_text(
        yaml.safe_dump(
            {'interface': {'parameters': small}, 'sandwich': {'parameters': {**small, 'source_layers': 2}}}
        )
    )
    command = ['-p', aiida_profile.name, 'workflow', 'launch', 'atomic-models', '--protocol', 'demo']
    result = subprocess.run(
        [str(Path(sys.executable).parent / 'aiida-lisei'), *command, '--overrides', str(overrides)],
        env={**os.environ, 'AIIDA_PATH': str(Path(get_config().dirpath).parent)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Success: AtomicModelsWorkChain<' in result.stdout
    node = orm.load_node(int(result.stdout.split('AtomicModelsWorkChain<')[1].split('>')[0]))
    assert node.is_finished_ok
    assert {'bcc_lithium', 'argyrodite', 'interface', 'sandwich'} <= set(node.outputs)
    assert len(node.outputs.argyrodite.sites) == 52  # Li24 P4 S20 Cl4
    assert len(node.outputs.sandwich.sites) == 88  # as the small_sandwich fixture: 2 anode, 2 source layers


def test_unknown_protocol_and_override(run_cli):
    """A protocol or an override key the work chain does not know fails with the protocol's message."""
    result = run_cli('workflow', 'launch', 'atomic-models', '--protocol', 'papr', '--dry-run')
    assert result.exit_code != 0 and 'unknown protocol `papr`' in result.output
    result = run_cli('workflow', 'launch', 'atomic-models', '--overrides', '{"sandwhich": {}}', '--dry-run')
    assert result.exit_code != 0 and 'did you mean `sandwich`' in result.output


def test_initial_data(run_cli, codes, li16):
    """``initial-data``: the codes take their roles by plugin; the structures their names."""
    inputs = dry_run(
        run_cli,
        'initial-data',
        *('-X', codes['lisei-tblite'].full_label, '-X', codes['lisei-tblite-md'].full_label),
        *('-S', f'bcc_lithium={li16.pk}', '--protocol', 'demo'),
    )
    assert inputs['structures'] == {'bcc_lithium': f'StructureData<{li16.pk}>'}
    assert inputs['md']['code'] == f'Code {codes["lisei-tblite-md"].full_label}'
    assert inputs['label']['tblite']['code'] == f'Code {codes["lisei-tblite"].full_label}'


def test_missing_code_role(run_cli, codes, li16):
    """Without a code for a role, the message names the role and the plugin it needs."""
    result = run_cli(
        'workflow', 'launch', 'initial-data', '-X', codes['lisei-tblite'].full_label, '-S', f'x={li16.pk}'
    )
    assert result.exit_code != 0
    assert 'no code for the role `tblite-md`' in result.output and 'lisei.tblite_md' in result.output


def test_initial_data_chgnet(run_cli, codes, li16):
    """``initial-data-chgnet`` with the ``demo_chgnet`` protocol."""
    inputs = dry_run(
        run_cli,
        'initial-data-chgnet',
        *('-X', codes['lisei-chgnet'].full_label, '-X', codes['lisei-chgnet-md'].full_label),
        *('-S', f'bcc_lithium={li16.pk}', '--protocol', 'demo_chgnet'),
    )
    assert inputs['label']['engine'] == 'chgnet'
    assert inputs['md']['code'] == f'Code {codes["lisei-chgnet-md"].full_label}'


def test_dp_train(run_cli, codes, training_set):
    """``dp-train``; a DeePMD typo in ``--overrides`` is refused by DeePMD-kit's checker before launch."""
    inputs = dry_run(run_cli, 'dp-train', '-X', codes['dp'].full_label, '-T', training_set.pk, '--seed', '5')
    assert inputs['dp_train']['seed'] == 5
    result = run_cli(
        'workflow',
        'launch',
        'dp-train',
        *('-X', codes['dp'].full_label, '-T', training_set.pk, '--dry-run'),
        *('--overrides', '{"dp_train": {"parameters": {"model": {"descriptor": {"rcutt": 5.0}}}}}'),
    )
    assert result.exit_code != 0 and 'Did you mean: rcut?' in result.output, result.output


def test_concurrent_learning(run_cli, codes, training_set, li16):
    """``concurrent-learning`` of bcc Li16 (demo)."""
    inputs = dry_run(
        run_cli,
        'concurrent-learning',
        *(
            '-X',
            codes['dp'].full_label,
            '-X',
            codes['lmp'].full_label,
            '-X',
            codes['lisei-tblite'].full_label,
        ),
        *('-T', training_set.pk, '-S', f'bcc_lithium={li16.pk}', '--seed', '11'),
    )
    assert inputs['seed'] == 11 and inputs['training_set'] == f'TrainingSetData<{training_set.pk}>'


def test_model_validation(run_cli, codes, model, li16):
    """``model-validation`` of the fixture model (demo)."""
    inputs = dry_run(
        run_cli,
        'model-validation',
        *(
            '-X',
            codes['lmp'].full_label,
            '-X',
            codes['dp'].full_label,
            '-X',
            codes['lisei-tblite'].full_label,
        ),
        *('-M', model.pk, '-s', li16.pk, '--protocol', 'demo'),
    )
    assert inputs['model'] == f'DeepPotentialData<{model.pk}>'


def test_restraint_md(run_cli, codes, small_sandwich, model):
    """``restraint-md`` on the smallest sandwich; ``lmp`` takes the equilibration."""
    inputs = dry_run(
        run_cli,
        'restraint-md',
        *('-X', codes['lisei-lmp-plumed'].full_label, '-X', codes['lmp'].full_label),
        *('-s', small_sandwich.pk, '-M', model.pk, '--seed', '3'),
    )
    assert inputs['md']['structure'] == f'GroupedStructureData<{small_sandwich.pk}>'
    assert inputs['md']['code'] == f'Code {codes["lisei-lmp-plumed"].full_label}'
    assert json.dumps(inputs).count(f'Code {codes["lmp"].full_label}') == 1


def test_nucleation_analysis(run_cli, codes, small_sandwich):
    """``nucleation-analysis`` of a two-frame trajectory of the smallest sandwich."""
    positions = np.array([site.position for site in small_sandwich.sites])
    trajectory = orm.TrajectoryData()
    trajectory.set_trajectory(
        symbols=[site.kind_name for site in small_sandwich.sites],
        positions=np.stack([positions, positions]),
        stepids=np.array([0, 100]),
        cells=np.stack([np.array(small_sandwich.cell)] * 2),
        times=np.array([0.0, 0.1]),
    )
    trajectory.store()
    inputs = dry_run(
        run_cli,
        'nucleation-analysis',
        *('-X', codes['lisei-qeq'].full_label, '-t', trajectory.pk, '-s', small_sandwich.pk),
    )
    assert inputs['trajectory'] == f'TrajectoryData<{trajectory.pk}>'


def test_study(run_cli, codes, aiida_code_installed):
    """``study`` with the demo protocol: every code finds its role (CP2K the electronic structure, CHGNet
    the labels); without the CP2K code the study names what is missing."""
    cp2k = aiida_code_installed(default_calc_job_plugin='cp2k', filepath_executable='/bin/true')
    names = ('lisei-chgnet-md', 'lisei-chgnet', 'dp', 'lmp', 'lisei-lmp-plumed', 'lisei-qeq')
    given = [argument for name in names for argument in ('-X', codes[name].full_label)]
    inputs = dry_run(run_cli, 'study', '-X', cp2k.full_label, *given, '--seed', '9')
    assert inputs['codes']['electronic_structure'] == f'Code {cp2k.full_label}'
    assert inputs['codes']['label'] == f'Code {codes["lisei-chgnet"].full_label}'
    assert inputs['codes']['md_engine'] == f'Code {codes["lisei-chgnet-md"].full_label}'
    result = run_cli('workflow', 'launch', 'study', *given, '--dry-run')
    assert result.exit_code != 0 and "lacks ['electronic_structure']" in result.output
