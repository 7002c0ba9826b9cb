"""Build a ``lisei.concurrent_learning`` builder from a DP-GEN ``param.json`` (``dpgen run`` input).

Every key that DP-GEN documents for LAMMPS exploration with VASP or CP2K labelling has one rule here
(:data:`PARAM_RULES`, :data:`JOB_RULES`): mapped, ignored (with the reason), accepted only with DP-GEN's
default value, or unsupported (with the reason and the closest supported alternative). The key table of
``docs/dpgen.md`` is generated from them (:func:`rules_markdown`); a test checks them against DP-GEN's own
argument list (``dpgen.generator.arginfo``).

As in DP-GEN, keys starting with ``_`` are comments and dropped; DP-GEN's aliases (``fp_params``, ``Ts``,
``ens``, ...) and DeePMD-kit's old names in ``default_training_param`` (``stop_batch``, v1 ``batch_size``,
...) are renamed first. Every problem is collected and raised once, as a :class:`DpgenImportError` that
lists each unsupported key with its reason and alternative; ignored keys are reported with
``warnings.warn``.
"""

from __future__ import annotations

import copy
import glob
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiida import orm

from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.workchains.concurrent_learning import TRAINING_REUSE_KEYS, ConcurrentLearningWorkChain

__all__ = (
    'DEEPMD_RENAMES',
    'JOB_RULES',
    'PARAM_RULES',
    'DpgenImportError',
    'Rule',
    'builder_from_dpgen_param',
    'check_dpgen_param',
    'dpgen_ensemble',
    'normalize_param',
    'rules_markdown',
)


@dataclass(frozen=True)
class Rule:
    """What the importer does with one ``param.json`` key.

    :param action: ``mapped``, ``ignored``, ``default`` (accepted only with a value of ``accepted``) or
        ``unsupported``.
    :param note: mapped: where the value goes; otherwise why.
    :param alternative: the closest supported way (``default`` and ``unsupported`` keys).
    :param accepted: the accepted values of a ``default`` key.
    """

    action: str
    note: str
    alternative: str = ''
    accepted: tuple[Any, ...] = ()


def _mapped(note: str) -> Rule:
    return Rule('mapped', note)


def _ignored(note: str) -> Rule:
    return Rule('ignored', note)


def _default(accepted: tuple[Any, ...], note: str, alternative: str) -> Rule:
    return Rule('default', note, alternative, accepted)


def _unsupported(note: str, alternative: str) -> Rule:
    return Rule('unsupported', note, alternative)


_RESTRAINT = 'bias the MD with `lisei.restraint_md` (LAMMPS + PLUMED moving restraint)'
_TRUST = '`trust_levels` per system, or per system and temperature range (`{t_min, t_max, f_lo, f_hi}`)'
_ENGINE_PROTOCOL = 'its protocol (`engine_protocol`, `--engine-protocol`)'

#: Rules of the top-level keys of ``param.json`` (LAMMPS exploration, VASP or CP2K labelling).
PARAM_RULES: dict[str, Rule] = {
    # basics
    'type_map': _mapped('`train.dp_train.parameters.model.type_map`; the type map of the initial data'),
    'mass_map': _ignored('masses follow the elements of `type_map`'),
    'use_ele_temp': _default(
        (0,), 'no electronic temperature', 'label at one smearing (the engine protocol)'
    ),
    # data
    'init_data_prefix': _mapped('prefix of `init_data_sys`'),
    'init_data_sys': _mapped('`training_set` (deepmd/npy folders), unless one is given'),
    'sys_format': _default(('vasp/poscar',), 'start configurations are POSCARs', 'convert them to POSCAR'),
    'init_batch_size': _ignored('batch size: `default_training_param.training.training_data.batch_size`'),
    'sys_configs_prefix': _mapped('prefix of `sys_configs`'),
    'sys_configs': _mapped('`structures`: the first file of each entry (or the given structures)'),
    'sys_batch_size': _ignored('batch size: `default_training_param.training.training_data.batch_size`'),
    # training
    'numb_models': _mapped('`num_models`'),
    'mlp_engine': _default(('dp',), 'DeePMD-kit only', 'DeePMD-kit (`dp`)'),
    'train_backend': _mapped('`train.dp_train.settings.backend` (`tensorflow`, `pytorch`)'),
    'model_format': _default(('pb', 'pth'), 'frozen models (model.pb, PyTorch model.pth)', "the backend's"),
    'default_training_param': _mapped('`train.dp_train.parameters` (seeds and data systems removed)'),
    'dp_train_skip_neighbor_stat': _mapped('`train.dp_train.settings.skip_neighbor_stat`'),
    'dp_compress': _mapped('`train.dp_train.settings.compress`'),
    'one_h5': _ignored('the training set is written as deepmd/npy by the CalcJob'),
    'training_iter0_model_path': _unsupported(
        'no initial models', 'train from scratch (every model has its own seed)'
    ),
    'training_init_model': _default(
        (False,),
        'the first iteration trains from scratch',
        'train from scratch first (`training_reuse` continues the models later)',
    ),
    'training_init_frozen_model': _unsupported('no initial frozen models', 'train from scratch'),
    'training_finetune_model': _unsupported('no fine-tuning', 'train from scratch'),
    'training_reuse_iter': _mapped(
        '`training_reuse.from_iteration` (+ 1: DP-GEN counts iterations from 0): from then on each model '
        "starts from the previous iteration's"
    ),
    'training_reuse_old_ratio': _ignored(
        "old and new frames are drawn by system size (DeePMD's prob_sys_size), no old-data ratio"
    ),
    'training_reuse_numb_steps': _mapped('`training_reuse.numb_steps`'),
    'training_reuse_start_lr': _mapped('`training_reuse.start_lr`'),
    'training_reuse_start_pref_e': _mapped('`training_reuse.start_pref_e`'),
    'training_reuse_start_pref_f': _mapped('`training_reuse.start_pref_f`'),
    'model_devi_activation_func': _unsupported(
        'one network for all models', 'the ensemble differs by its seeds (`seed`)'
    ),
    'srtab_file_path': _unsupported('no DP-ZBL pair table', 'a plain DeePMD model'),
    # exploration (LAMMPS)
    'model_devi_engine': _default(('lammps',), 'LAMMPS explores', 'LAMMPS (`lisei.exploration`)'),
    'model_devi_jobs': _mapped('`schedule`, one item per job; their number is `max_iterations`'),
    'model_devi_dt': _mapped('`explore.parameters.timestep` (ps -> fs)'),
    'model_devi_skip': _mapped('`selection.model_devi_skip`'),
    'model_devi_f_trust_lo': _mapped('`trust_levels[system].f_lo`'),
    'model_devi_f_trust_hi': _mapped('`trust_levels[system].f_hi`'),
    'model_devi_v_trust_lo': _mapped('`trust_levels[system].v_lo`'),
    'model_devi_v_trust_hi': _mapped('`trust_levels[system].v_hi`'),
    'model_devi_taut': _mapped('`explore.parameters.thermostat_damping` (ps -> fs)'),
    'model_devi_taup': _mapped('`explore.parameters.barostat_damping` (ps -> fs)'),
    'model_devi_adapt_trust_lo': _default((False,), 'fixed trust levels', _TRUST),
    'model_devi_numb_candi_f': _unsupported('no adaptive lower trust level', _TRUST),
    'model_devi_numb_candi_v': _unsupported('no adaptive lower trust level', _TRUST),
    'model_devi_perc_candi_f': _unsupported('no adaptive lower trust level', _TRUST),
    'model_devi_perc_candi_v': _unsupported('no adaptive lower trust level', _TRUST),
    'model_devi_f_avg_relative': _default((False,), 'absolute force deviations', _TRUST),
    'use_relative': _default((False,), 'absolute force deviations', _TRUST),
    'epsilon': _unsupported('absolute force deviations', _TRUST),
    'use_relative_v': _default((False,), 'absolute virial deviations', _TRUST),
    'epsilon_v': _unsupported('absolute virial deviations', _TRUST),
    'model_devi_clean_traj': _ignored('nothing to clean: trajectories are retrieved into the repository'),
    'model_devi_merge_traj': _ignored('each exploration stores one trajectory node'),
    'model_devi_nopbc': _default((False,), 'periodic boxes only', 'a periodic box with vacuum'),
    'model_devi_plumed': _default((False,), 'no PLUMED in the explorations', _RESTRAINT),
    'model_devi_plumed_path': _default((False,), 'no PLUMED in the explorations', _RESTRAINT),
    'shuffle_poscar': _default((False,), 'atoms are not shuffled', 'build the alloy configurations first'),
    'lmp_d3': _unsupported('no D3 dispersion in LAMMPS', 'train on labels that include D3'),
    'lmp_neigh_modify_one': _ignored('our LAMMPS script sets its neighbour lists'),
    # labelling
    'fp_style': _mapped('`label.engine`: vasp or cp2k (and our tblite)'),
    'fp_task_max': _mapped('`fp_task_max` (pooled over the explorations of a system, as DP-GEN)'),
    'fp_task_min': _mapped('`selection.fp_task_min`'),
    'fp_accurate_threshold': _mapped('`selection.fp_accurate_threshold`'),
    'fp_accurate_soft_threshold': _mapped('`selection.fp_accurate_soft_threshold`'),
    'fp_cluster_vacuum': _unsupported('no cluster labelling', 'label the periodic frames'),
    'detailed_report_make_fp': _ignored('every iteration records its statistics (`iterations` output)'),
    'ratio_failed': _unsupported(
        'no abort on a fraction of failed labels',
        'failed frames are recorded per iteration (`n_failed_labels`); only all failing stops the loop',
    ),
    # VASP
    'fp_pp_path': _mapped('`potential_family`: upload this folder as a POTCAR family and pass its name'),
    'fp_pp_files': _mapped('`potential_mapping`: one POTCAR per `type_map` element, named as the element'),
    'fp_incar': _ignored(f'INCAR settings come from {_ENGINE_PROTOCOL}: VASP paper (PBE, 600 eV)'),
    'fp_aniso_kspacing': _unsupported('one k-point spacing per system', 'the protocol `kpoints_spacing`'),
    'cvasp': _ignored('aiida-vasp restarts failed VASP runs (Custodian is not used)'),
    'fp_skip_bad_box': _unsupported('no box filter', 'explore boxes that stay reasonable (NVT, npt-i)'),
    # CP2K
    'user_fp_params': _ignored(f'the engine settings come from {_ENGINE_PROTOCOL}: CP2K pbe, gfn1_xtb'),
    'external_input_path': _ignored(f'CP2K settings come from {_ENGINE_PROTOCOL}: pbe, gfn1_xtb'),
}

#: DP-GEN's own aliases of top-level keys.
PARAM_ALIASES = {'fp_params': 'user_fp_params', 'training_reuse_stop_batch': 'training_reuse_numb_steps'}

#: Rules of the keys of one ``model_devi_jobs`` item.
JOB_RULES: dict[str, Rule] = {
    'sys_idx': _mapped('the systems of the schedule item (by `sys_configs` index)'),
    'temps': _mapped('`temperatures` (K)'),
    'press': _mapped('`pressure` (bar), one per job; only with npt'),
    'trj_freq': _mapped('`stride` (steps)'),
    'nsteps': _mapped('`n_steps`'),
    'ensemble': _mapped('`ensemble` (nvt; npt, npt-i, npt-iso: isotropic; npt-a, npt-aniso: anisotropic)'),
    'taut': _mapped('`thermostat_damping` (ps -> fs)'),
    'taup': _mapped('`barostat_damping` (ps -> fs)'),
    'dt': _mapped('`timestep` (ps -> fs)'),
    'neidelay': _ignored('our LAMMPS script sets its neighbour lists'),
    'template': _unsupported('no LAMMPS or PLUMED input templates', f'schedule entries; {_RESTRAINT}'),
    'rev_mat': _unsupported('no LAMMPS or PLUMED input templates', f'schedule entries; {_RESTRAINT}'),
    'sys_rev_mat': _unsupported('no LAMMPS or PLUMED input templates', f'schedule entries; {_RESTRAINT}'),
    'nbeads': _unsupported('no path-integral MD', 'classical MD'),
    'pka_e': _unsupported('no primary knock-on atom', 'explore at a higher temperature'),
    's_t': _unsupported('every iteration trains its models', 'train in every iteration'),
    'model_devi_f_trust_lo': _unsupported('trust levels do not change with the iteration', _TRUST),
    'model_devi_f_trust_hi': _unsupported('trust levels do not change with the iteration', _TRUST),
    'model_devi_v_trust_lo': _unsupported('trust levels do not change with the iteration', _TRUST),
    'model_devi_v_trust_hi': _unsupported('trust levels do not change with the iteration', _TRUST),
}

#: DP-GEN's own aliases of job keys (``parse_cur_job`` and ``_check_skip_train`` of ``dpgen run``).
JOB_ALIASES = {
    'ens': 'ensemble',
    'Ts': 'temps',
    'Ps': 'press',
    't_freq': 'trj_freq',
    'traj_freq': 'trj_freq',
    'sk_tr': 's_t',
    'skip_train': 's_t',
    'skip_training': 's_t',
}

#: DeePMD-kit's old names in ``default_training_param.training``: renamed, or ``None``: dropped (the CalcJob
#: writes the data systems; ``coord_norm`` and ``type_fitting_net`` have had no effect since DeePMD-kit 1.0).
DEEPMD_RENAMES: dict[str, str | None] = {
    'stop_batch': 'numb_steps',
    'batch_size': 'training_data.batch_size',
    'systems': None,
    'set_prefix': None,
    'numb_test': None,
    'coord_norm': None,
    'type_fitting_net': None,
}

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

#: ps (DP-GEN) -> fs (our exploration parameters).
PS_TO_FS = 1000.0


class DpgenImportError(ValueError):
    """A ``param.json`` that cannot be imported; ``problems`` lists every reason, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = '\n'.join(f'  - {problem}' for problem in self.problems)
        super().__init__(f'unsupported DP-GEN keys or values ({len(self.problems)}):\n{lines}')


def dpgen_ensemble(name: str) -> dict[str, str]:
    """Return the exploration parameters of a DP-GEN ensemble (``nvt``, ``npt``/``npt-i``, ``npt-a``)."""
    if name not in ENSEMBLES:
        raise ValueError(f'ensemble `{name}` is not supported; supported: {sorted(ENSEMBLES)}')
    return dict(ENSEMBLES[name])


def _drop_comments(value: Any) -> Any:
    """Return ``value`` without the keys starting with ``_`` (DP-GEN's and DeePMD-kit's comments), nested."""
    if isinstance(value, Mapping):
        return {key: _drop_comments(item) for key, item in value.items() if not str(key).startswith('_')}
    if isinstance(value, list):
        return [_drop_comments(item) for item in value]
    return value


def _rename(data: Mapping[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """Return ``data`` with DP-GEN's aliases renamed (the canonical name wins when both are given)."""
    renamed = {key: value for key, value in data.items() if key not in aliases}
    for alias, name in aliases.items():
        if alias in data:
            renamed.setdefault(name, data[alias])
    return renamed


def _modern_training(training: Mapping[str, Any]) -> dict[str, Any]:
    """Return a ``training`` section with DeePMD-kit's old names renamed or dropped (``DEEPMD_RENAMES``)."""
    section = dict(training)
    for old, new in DEEPMD_RENAMES.items():
        if old not in section:
            continue
        value = section.pop(old)
        if new is None:
            continue
        *path, name = new.split('.')
        target = section
        for part in path:
            target = target.setdefault(part, {})
        target.setdefault(name, value)
    return section


def _problem(rule: Rule, value: Any = None) -> str:
    """Return the reason of one refused key (with the refused value) and what to use instead."""
    shown = f' = {value!r}' if rule.action == 'default' else ''
    accepted = f' (accepted: {", ".join(map(repr, rule.accepted))})' if rule.accepted else ''
    return f'{shown}: {rule.note}{accepted}; instead: {rule.alternative}'


def _check_rules(
    data: Mapping[str, Any], rules: Mapping[str, Rule]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Return the refused keys of ``data`` as ``(key, reason)`` pairs, and its ignored keys."""
    problems, ignored = [], []
    for key, value in data.items():
        rule = rules.get(key)
        if rule is None:
            problems.append((key, ': not a DP-GEN key of LAMMPS exploration with VASP or CP2K labelling'))
        elif rule.action == 'unsupported' or (rule.action == 'default' and value not in rule.accepted):
            problems.append((key, _problem(rule, value)))
        elif rule.action == 'ignored':
            ignored.append(key)
    return problems, ignored


def _job_problems(job: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return the refused keys and values of one ``model_devi_jobs`` item as ``(key, reason)`` pairs."""
    problems, _ = _check_rules(job, JOB_RULES)
    ensemble = job.get('ensemble', 'nvt')
    if ensemble not in ENSEMBLES:
        problems.append(('ensemble', f' = {ensemble!r}: not supported; instead: one of {sorted(ENSEMBLES)}'))
    elif ENSEMBLES[ensemble]['ensemble'] == 'npt' and len(job.get('press', [])) != 1:
        several = ': several pressures, one exploration each; instead: one job per pressure'
        problems.append(
            ('press', several if job.get('press') else ': npt needs a pressure; instead: give one')
        )
    if 'template' not in job and not {'temps', 'nsteps'} <= set(job):
        problems.append(('temps', ': `temps` and `nsteps` are required; instead: give both'))
    return problems


def _index_list(indices: Sequence[int]) -> str:
    """Return job indices as a range (``0-8``) when contiguous, else comma-separated (``0,2,4``)."""
    if len(indices) > 1 and list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f'{indices[0]}-{indices[-1]}'
    return ','.join(map(str, indices))


def normalize_param(param: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Return ``(param, problems, ignored)``: comments dropped, aliases and old names renamed, keys checked.

    ``problems`` has one line per unsupported key or value, with the reason and the alternative (the jobs
    that share one are listed together); ``ignored`` names the accepted keys that have no effect here.
    """
    given = {name: alias for alias, name in PARAM_ALIASES.items() if alias in param and name not in param}
    param = _rename(_drop_comments(param), PARAM_ALIASES)
    found, ignored = _check_rules(param, PARAM_RULES)
    problems = [f'{given.get(key, key)}{reason}' for key, reason in found]
    ignored = [given.get(key, key) for key in ignored]
    jobs = [_rename(job, JOB_ALIASES) for job in param.get('model_devi_jobs', [])]
    by_reason: dict[tuple[str, str], list[int]] = {}
    for index, job in enumerate(jobs):
        for key, reason in _job_problems(job):
            by_reason.setdefault((key, reason), []).append(index)
        ignored.extend(f'model_devi_jobs[{index}].{key}' for key in _check_rules(job, JOB_RULES)[1])
    for (key, reason), indices in by_reason.items():
        problems.append(f'model_devi_jobs[{_index_list(indices)}].{key}{reason}')
    if jobs:
        param['model_devi_jobs'] = jobs
    if param.get('fp_style') not in FP_STYLES:
        problems.append(
            f'fp_style = {param.get("fp_style")!r}: not supported; instead: one of {sorted(FP_STYLES)}'
        )
    for key in ('type_map', 'sys_configs', 'model_devi_jobs', 'default_training_param', 'fp_task_max'):
        if key not in param:
            problems.append(f'{key}: missing (required by DP-GEN too)')
    training = param.get('default_training_param', {})
    if 'training' in training:
        param['default_training_param'] = {**training, 'training': _modern_training(training['training'])}
    return param, problems, ignored


def check_dpgen_param(
    param: Mapping[str, Any], potential_family: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Return the normalized ``param`` and its ignored keys; raise :class:`DpgenImportError` listing every
    unsupported key or value, and a VASP import without ``potential_family`` (a POTCAR family's name)."""
    param, problems, ignored = normalize_param(param)
    if param.get('fp_style') == 'vasp' and not potential_family:
        problems.append(
            'fp_pp_path/fp_pp_files: VASP reads its POTCARs from an uploaded family: upload the folder '
            f'{param.get("fp_pp_path", "<fp_pp_path>")!r} with `aiida-vasp potcar uploadfamily --path=... '
            '--name=NAME` and pass potential_family=NAME (`--potential-family NAME`)'
        )
    if problems:
        raise DpgenImportError(problems)
    return param, ignored


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


def _structures_from_configs(param: Mapping[str, Any], root: Path) -> dict[str, orm.StructureData]:
    """Return the first configuration of each ``sys_configs`` entry as ``sys_<index>`` (read with ASE)."""
    from ase.io import read

    prefix = root / param.get('sys_configs_prefix', '')
    structures = {}
    for index, patterns in enumerate(param['sys_configs']):
        files = sorted(name for pattern in patterns for name in glob.glob(str(prefix / pattern)))
        if not files:
            raise ValueError(
                f'sys_configs[{index}] matches no file under {prefix}: pass the start configurations '
                '(`structures`) or run where the files are'
            )
        structures[f'sys_{index:03d}'] = orm.StructureData(ase=read(files[0], format='vasp'))
    return structures


def _schedule(param: Mapping[str, Any], labels: Sequence[str]) -> list[list[dict[str, Any]]]:
    """Return the ``schedule`` of ``model_devi_jobs``: one item per job, one entry per ``sys_idx``."""
    per_job = {'taut': 'thermostat_damping', 'taup': 'barostat_damping', 'dt': 'timestep'}
    schedule = []
    for job in param['model_devi_jobs']:
        md = {
            'n_steps': job['nsteps'],
            'stride': job['trj_freq'],
            **dpgen_ensemble(job.get('ensemble', 'nvt')),
        }
        if md['ensemble'] == 'npt':
            md['pressure'] = float(job['press'][0])  # bar, as in DP-GEN's LAMMPS input
        md.update({name: PS_TO_FS * job[key] for key, name in per_job.items() if key in job})
        schedule.append(
            [{'system': labels[i], 'temperatures': list(job['temps']), **md} for i in job['sys_idx']]
        )
    return schedule


def _explore_parameters(param: Mapping[str, Any]) -> dict[str, float]:
    """Return the shared exploration parameters (fs) of ``model_devi_dt``, ``_taut``, ``_taup`` (ps)."""
    names = {
        'model_devi_dt': 'timestep',
        'model_devi_taut': 'thermostat_damping',
        'model_devi_taup': 'barostat_damping',
    }
    return {name: PS_TO_FS * param[key] for key, name in names.items() if key in param}


def builder_from_dpgen_param(
    param: Mapping[str, Any] | str | Path,
    codes: Mapping[str, orm.AbstractCode],
    structures: Mapping[str, orm.StructureData] | Sequence[orm.StructureData] | None = None,
    training_set: TrainingSetData | None = None,
    protocol: str | None = None,
    seed: int = 1,
    converged_accuracy: float = 0.99,
    potential_mapping: Mapping[str, str] | None = None,
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
    :param potential_mapping: VASP: element -> POTCAR name in the family (default: the element's symbol).
    :param label_kwargs: for ``LabelWorkChain.get_builder_from_protocol`` (``potential_family`` for VASP,
        ``engine_protocol``, ...).
    :raises DpgenImportError: listing every unsupported key or value, and a missing ``potential_family``.
    """
    root = Path.cwd()
    if isinstance(param, str | Path):
        root = Path(param).parent
        param = json.loads(Path(param).read_text())
    param, ignored = check_dpgen_param(param, label_kwargs.get('potential_family'))
    if ignored:
        warnings.warn(
            f'ignored DP-GEN keys (set by our protocols and engines): {sorted(ignored)}', stacklevel=2
        )

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
    schedule = _schedule(param, labels)
    training = _strip_dpgen_training(param['default_training_param'], param['type_map'])
    settings = {
        name: param[key]
        for key, name in (
            ('dp_compress', 'compress'),
            ('dp_train_skip_neighbor_stat', 'skip_neighbor_stat'),
            ('train_backend', 'backend'),
        )
        if key in param
    }
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
        'train': {'overrides': {'dp_train': {'parameters': training, 'settings': settings}}},
        'label': {'engine': FP_STYLES[param['fp_style']]},
    }
    if 'fp_accurate_soft_threshold' in param:
        overrides['selection']['fp_accurate_soft_threshold'] = param['fp_accurate_soft_threshold']
    if param.get('training_reuse_iter') is not None:
        overrides['training_reuse'] = {
            'from_iteration': max(2, param['training_reuse_iter'] + 1),
            **{
                key: param[f'training_reuse_{key}']
                for key in TRAINING_REUSE_KEYS
                if key != 'from_iteration' and param.get(f'training_reuse_{key}') is not None
            },
        }
    if explore := _explore_parameters(param):
        overrides['explore'] = {'parameters': explore}
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
    builder.train.dp_train.parameters = orm.Dict(training)
    if param['fp_style'] == 'vasp':
        mapping = {element: (potential_mapping or {}).get(element, element) for element in param['type_map']}
        for inputs in [builder.label.vasp, *(item['vasp'] for item in builder.label_overrides.values())]:
            inputs['potential_mapping'] = orm.Dict(mapping)
            inputs['type_map'] = orm.List(list(param['type_map']))
    return builder


def _strip_dpgen_training(training: Mapping[str, Any], type_map: Sequence[str]) -> dict[str, Any]:
    """Return a normalized ``default_training_param`` without what the CalcJob sets (seeds, data systems)."""
    data = copy.deepcopy(dict(training))
    data['model'] = {**data['model'], 'type_map': list(type_map)}
    for section in ('descriptor', 'fitting_net'):
        data['model'].get(section, {}).pop('seed', None)
    data['training'].pop('seed', None)
    for key in ('training_data', 'validation_data'):
        data['training'].get(key, {}).pop('systems', None)
        data['training'].get(key, {}).pop('set_prefix', None)
    return data


_ACTIONS = {
    'mapped': 'mapped',
    'ignored': 'ignored',
    'default': 'only the default',
    'unsupported': 'refused',
}


def rules_markdown() -> str:
    """Return the key-by-key tables of :data:`PARAM_RULES`, :data:`JOB_RULES`, the aliases and
    :data:`DEEPMD_RENAMES` as Markdown (``docs/dpgen_keys.md`` is written from it when the docs are built)."""

    def table(rules: Mapping[str, Rule], aliases: Mapping[str, str]) -> list[str]:
        also = {name: [alias for alias, target in aliases.items() if target == name] for name in rules}
        lines = ['| key | what happens | where, or why | instead |', '| --- | --- | --- | --- |']
        for key, rule in rules.items():
            names = ', '.join(f'`{name}`' for name in [key, *also[key]])
            accepted = (
                f' (accepted: {", ".join(f"`{value!r}`" for value in rule.accepted)})'
                if rule.accepted
                else ''
            )
            lines.append(
                f'| {names} | {_ACTIONS[rule.action]}{accepted} | {rule.note} | {rule.alternative} |'
            )
        return lines

    renames = ['| old name | becomes |', '| --- | --- |']
    renames += [
        f'| `training.{old}` | {f"`training.{new}`" if new else "dropped"} |'
        for old, new in DEEPMD_RENAMES.items()
    ]
    return '\n'.join(
        [
            '<!-- Generated from aiida_lisei/workchains/dpgen_import.py when the docs are built. -->',
            '',
            '### param.json',
            '',
            *table(PARAM_RULES, PARAM_ALIASES),
            '',
            '### An item of model_devi_jobs',
            '',
            *table(JOB_RULES, JOB_ALIASES),
            '',
            "### DeePMD-kit's old names in default_training_param",
            '',
            *renames,
            '',
        ]
    )
