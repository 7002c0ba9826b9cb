"""Build a ``lisei.concurrent_learning`` builder from a DP-GEN 0.14 ``param.json`` (``dpgen run`` input).

The mapping of every key, and what is not supported, is tabulated in ``docs/concurrent_learning.md``.
Unsupported keys (or values) raise ``ValueError`` listing all of them; keys that only name files or machine
details that our protocols set otherwise are accepted and reported as ignored (``warnings.warn``).
"""

from __future__ import annotations

import glob
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiida import orm

from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain

__all__ = ('IGNORED_KEYS', 'SUPPORTED_KEYS', 'builder_from_dpgen_param', 'dpgen_ensemble')

#: param.json keys that are mapped onto the work chain.
SUPPORTED_KEYS = frozenset(
    {
        'type_map',
        'init_data_prefix',
        'init_data_sys',
        'sys_configs_prefix',
        'sys_configs',
        'numb_models',
        'default_training_param',
        'model_devi_jobs',
        'model_devi_dt',
        'model_devi_skip',
        'model_devi_f_trust_lo',
        'model_devi_f_trust_hi',
        'model_devi_v_trust_lo',
        'model_devi_v_trust_hi',
        'fp_task_max',
        'fp_task_min',
        'fp_accurate_threshold',
        'fp_accurate_soft_threshold',
        'fp_style',
    }
)

#: Keys accepted only with these values (DP-GEN's defaults, or the only ones we implement).
REQUIRED_VALUES: dict[str, tuple[Any, ...]] = {
    'model_devi_engine': ('lammps',),
    'train_backend': ('tensorflow',),
    'use_ele_temp': (0,),
    'model_devi_nopbc': (False,),
    'model_devi_adapt_trust_lo': (False,),
    'shuffle_poscar': (False,),
    'training_init_model': (False,),
    'sys_format': ('vasp/poscar',),
}

#: Keys accepted and ignored: masses, batch sizes and file names that our protocols and engines set.
IGNORED_KEYS = frozenset(
    {
        'mass_map',
        'init_batch_size',
        'sys_batch_size',
        'model_devi_clean_traj',
        'fp_pp_path',
        'fp_pp_files',
        'fp_incar',
        'user_fp_params',
        'external_input_path',
    }
)

#: Keys of a ``model_devi_jobs`` item that are mapped.
JOB_KEYS = frozenset({'sys_idx', 'temps', 'press', 'nsteps', 'trj_freq', 'ensemble', '_idx'})

#: DP-GEN ``fp_style`` -> ``lisei.label`` engine (``tblite`` is ours, for demonstrations).
FP_STYLES = {'vasp': 'vasp', 'cp2k': 'cp2k', 'tblite': 'tblite'}

#: DP-GEN ensemble -> exploration parameters.
ENSEMBLES = {
    'nvt': {'ensemble': 'nvt'},
    'npt': {'ensemble': 'npt', 'pressure_coupling': 'iso'},
    'npt-i': {'ensemble': 'npt', 'pressure_coupling': 'iso'},
    'npt-iso': {'ensemble': 'npt', 'pressure_coupling': 'iso'},
    'npt-a': {'ensemble': 'npt', 'pressure_coupling': 'aniso'},
    'npt-aniso': {'ensemble': 'npt', 'pressure_coupling': 'aniso'},
}


def dpgen_ensemble(name: str) -> dict[str, str]:
    """Return the exploration parameters of a DP-GEN ensemble (``nvt``, ``npt``/``npt-i``, ``npt-a``)."""
    if name not in ENSEMBLES:
        raise ValueError(f'ensemble `{name}` is not supported; supported: {sorted(ENSEMBLES)}')
    return dict(ENSEMBLES[name])


def _per_system(value: Any, count: int, name: str) -> list[Any]:
    """Return DP-GEN's scalar, list or dict (string keys = ``sys_configs`` indices) value for each system."""
    if value is None or isinstance(value, int | float):
        return [value] * count
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f'`{name}` has {len(value)} values for {count} systems')
        return list(value)
    if isinstance(value, Mapping):
        by_index = {int(key): level for key, level in value.items()}
        missing = [index for index in range(count) if index not in by_index]
        if missing:
            raise ValueError(f'`{name}` has no value for the systems {missing}')
        return [by_index[index] for index in range(count)]
    raise ValueError(f'`{name}` must be a number, a list or a dict, got {type(value).__name__}')


def _check_keys(param: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` listing every unsupported key or value; warn about the ignored keys."""
    problems = []
    for key, value in param.items():
        if key in REQUIRED_VALUES and value not in REQUIRED_VALUES[key]:
            problems.append(f'{key} = {value!r} (only {list(REQUIRED_VALUES[key])})')
        elif key not in SUPPORTED_KEYS | IGNORED_KEYS | set(REQUIRED_VALUES):
            problems.append(key)
    for index, job in enumerate(param.get('model_devi_jobs', [])):
        problems.extend(f'model_devi_jobs[{index}].{key}' for key in sorted(set(job) - JOB_KEYS))
        if len(job.get('press', [None])) > 1:
            problems.append(f'model_devi_jobs[{index}].press with several pressures (one per job)')
    if param.get('fp_style') not in FP_STYLES:
        problems.append(f'fp_style = {param.get("fp_style")!r} (only {sorted(FP_STYLES)})')
    if problems:
        raise ValueError('unsupported DP-GEN keys or values: ' + '; '.join(problems))
    ignored = sorted(IGNORED_KEYS & set(param))
    if ignored:
        warnings.warn(f'ignored DP-GEN keys (set by our protocols and engines): {ignored}', stacklevel=3)


def _structures_from_configs(param: Mapping[str, Any], root: Path) -> dict[str, orm.StructureData]:
    """Return the first configuration of each ``sys_configs`` entry as ``sys_<index>`` (read with ASE)."""
    from ase.io import read

    prefix = root / param.get('sys_configs_prefix', '')
    structures = {}
    for index, patterns in enumerate(param['sys_configs']):
        files = sorted(name for pattern in patterns for name in glob.glob(str(prefix / pattern)))
        if not files:
            raise ValueError(f'sys_configs[{index}] matches no file under {prefix}')
        structures[f'sys_{index:03d}'] = orm.StructureData(ase=read(files[0], format='vasp'))
    return structures


def builder_from_dpgen_param(
    param: Mapping[str, Any] | str | Path,
    codes: Mapping[str, orm.AbstractCode],
    structures: Mapping[str, orm.StructureData] | Sequence[orm.StructureData] | None = None,
    training_set: TrainingSetData | None = None,
    protocol: str | None = None,
    seed: int = 1,
    converged_accuracy: float = 0.99,
    **label_kwargs: Any,
):
    """Return a ``lisei.concurrent_learning`` builder equivalent to a DP-GEN ``param.json``.

    :param param: the parsed ``param.json`` or its path (relative data paths are read from its folder).
    :param codes: ``dp`` (DeePMD-kit), ``lmp`` (LAMMPS with DeePMD) and ``fp`` (the labelling engine's code).
    :param structures: start configuration of each ``sys_configs`` entry, in its order (a mapping gives the
        system labels, e.g. ``bcc_lithium``); default: the first file of each entry, labelled ``sys_<index>``.
    :param training_set: the initial frames; default: ``init_data_sys`` read as deepmd/npy.
    :param protocol: protocol of ``lisei.concurrent_learning`` for what param.json does not set.
    :param seed: root seed (DP-GEN draws unrecorded seeds).
    :param converged_accuracy: stop early at this accurate fraction (DP-GEN runs all ``model_devi_jobs``).
    :param label_kwargs: for ``LabelWorkChain.get_builder_from_protocol`` (``potential_family``, ...).
    """
    root = Path.cwd()
    if isinstance(param, str | Path):
        root = Path(param).parent
        param = json.loads(Path(param).read_text())
    _check_keys(param)
    nsystems = len(param['sys_configs'])
    if structures is None:
        structures = _structures_from_configs(param, root)
    elif not isinstance(structures, Mapping):
        structures = {f'sys_{index:03d}': structure for index, structure in enumerate(structures)}
    if len(structures) != nsystems:
        raise ValueError(f'{len(structures)} structures given for {nsystems} sys_configs entries')
    labels = list(structures)
    if training_set is None:
        prefix = root / param.get('init_data_prefix', '')
        training_set = TrainingSetData.from_deepmd_npy(
            [prefix / path for path in param['init_data_sys']], type_map=param['type_map']
        )

    keys = {f'{name}_{bound}': f'model_devi_{name}_trust_{bound}' for name in 'fv' for bound in ('lo', 'hi')}
    levels = {key: _per_system(param.get(name), nsystems, name) for key, name in keys.items()}
    trust = {
        label: {key: values[index] for key, values in levels.items() if values[index] is not None}
        for index, label in enumerate(labels)
    }

    schedule = []
    for job in param['model_devi_jobs']:
        md = {
            'n_steps': job['nsteps'],
            'stride': job.get('trj_freq', 10),
            **dpgen_ensemble(job.get('ensemble', 'nvt')),
        }
        if md['ensemble'] == 'npt':
            md['pressure'] = float(job['press'][0])  # bar, as in DP-GEN's LAMMPS input
        schedule.append(
            [{'system': labels[i], 'temperatures': list(job['temps']), **md} for i in job['sys_idx']]
        )

    training = dict(param['default_training_param'])
    training['model'] = {**training['model'], 'type_map': list(param['type_map'])}
    overrides: dict[str, Any] = {
        'schedule': schedule,
        'trust_levels': trust,
        'num_models': param.get('numb_models', 4),
        'max_iterations': len(schedule),
        'converged_accuracy': converged_accuracy,
        'fp_task_max': param['fp_task_max'],
        'selection': {
            'fp_task_min': param.get('fp_task_min', 0),
            'model_devi_skip': param.get('model_devi_skip', 0),
            'fp_accurate_threshold': param.get('fp_accurate_threshold', 1.0),
        },
        'train': {'overrides': {'dp_train': {'parameters': _strip_dpgen_training(training)}}},
        'label': {'engine': FP_STYLES[param['fp_style']]},
    }
    if 'fp_accurate_soft_threshold' in param:
        overrides['selection']['fp_accurate_soft_threshold'] = param['fp_accurate_soft_threshold']
    if 'model_devi_dt' in param:
        overrides['explore'] = {'parameters': {'timestep': 1000.0 * param['model_devi_dt']}}  # ps -> fs
    builder = ConcurrentLearningWorkChain.get_builder_from_protocol(
        codes['dp'],
        codes['lmp'],
        codes['fp'],
        training_set,
        structures,
        protocol=protocol,
        overrides=overrides,
        seed=seed,
        **label_kwargs,
    )
    # The protocol's network sections are replaced, not merged, by param.json's.
    builder.train.dp_train.parameters = orm.Dict(_strip_dpgen_training(training))
    return builder


def _strip_dpgen_training(training: Mapping[str, Any]) -> dict[str, Any]:
    """Return DP-GEN's ``default_training_param`` without what the CalcJob sets (seeds, data systems)."""
    data = json.loads(json.dumps(training))
    for section in ('descriptor', 'fitting_net'):
        data['model'].get(section, {}).pop('seed', None)
    data['training'].pop('seed', None)
    for key in ('training_data', 'validation_data'):
        data['training'].get(key, {}).pop('systems', None)
        data['training'].get(key, {}).pop('set_prefix', None)
    for key in ('systems', 'set_prefix', 'batch_size'):  # DeePMD v1 layout
        data['training'].pop(key, None)
    return data
