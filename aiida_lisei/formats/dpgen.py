"""DP-GEN's files: the layout of an iteration's explorations, and the computers of a ``machine.json``.

No AiiDA imports. :func:`write_model_devi_task` writes one exploration as DP-GEN writes a task of
``iter.<i>/01.model_devi`` (``task.<system>.<task>/{input.lammps, conf.lmp, job.json, model_devi.out,
traj/<step>.lammpstrj}``, with links to the models of ``iter.<i>/00.train``); :func:`split_dump` cuts a
LAMMPS text dump into its frames. :func:`machine_computers` reads the Slurm/SSH context of a DP-GEN
(dpdispatcher) ``machine.json``: one computer per distinct context, with the options of
``aiida-lisei setup remote`` and what is missing.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = (
    'MACHINE_ROLES',
    'RemoteComputer',
    'iteration_folder',
    'machine_computers',
    'split_dump',
    'task_folder',
    'write_model_devi_task',
)

#: The sections of a DP-GEN ``machine.json`` and the code each one runs.
MACHINE_ROLES = {'train': 'dp', 'model_devi': 'lmp', 'fp': 'fp'}

#: dpdispatcher ``batch_type`` (lower case) -> AiiDA scheduler.
SCHEDULERS = {
    'slurm': 'core.slurm',
    'pbs': 'core.pbspro',
    'torque': 'core.torque',
    'lsf': 'core.lsf',
    'sge': 'core.sge',
    'shell': 'core.direct',
}

#: dpdispatcher ``context_type`` (lower case, without ``context``) -> AiiDA transport.
TRANSPORTS = {'ssh': 'core.ssh', 'local': 'core.local', 'lazylocal': 'core.local'}


def iteration_folder(iteration: int) -> str:
    """Return DP-GEN's folder of an iteration (1-based here, 0-based in DP-GEN): ``iter.000000``, ..."""
    return f'iter.{iteration - 1:06d}'


def task_folder(system_index: int, task_index: int) -> str:
    """Return DP-GEN's folder of an exploration task: ``task.<system:03d>.<task:06d>``."""
    return f'task.{system_index:03d}.{task_index:06d}'


def split_dump(text: str) -> list[tuple[int, str]]:
    """Return the frames of a LAMMPS text dump as ``(step, text)``, in file order."""
    starts = [match.start() for match in re.finditer(r'^ITEM: TIMESTEP', text, flags=re.MULTILINE)]
    frames = []
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        block = text[start:end]
        frames.append((int(block.splitlines()[1]), block))
    return frames


def write_model_devi_task(
    folder: Path,
    *,
    input_lammps: str,
    conf_lmp: str,
    model_devi: str,
    dump: str,
    job: Mapping[str, Any],
    links: Mapping[str, Path] | None = None,
) -> list[Path]:
    """Write one exploration as a DP-GEN ``01.model_devi`` task; return the files written.

    :param input_lammps: the LAMMPS input script; :param conf_lmp: the start configuration (data file);
    :param model_devi: ``model_devi.out``; :param dump: the trajectory (text dump, one file per frame in
        ``traj/<step>.lammpstrj`` as DP-GEN's input writes it); :param job: written as ``job.json``
        (temperature K, pressure bar, ...).
    :param links: further names in the task and the files they point to (relative links), e.g. the models
        and data file that ``input.lammps`` reads, so that it runs in the task folder.
    """
    (folder / 'traj').mkdir(parents=True, exist_ok=True)
    files = {
        'input.lammps': input_lammps,
        'conf.lmp': conf_lmp,
        'model_devi.out': model_devi,
        'job.json': json.dumps(dict(job), indent=4),
    }
    files.update({f'traj/{step}.lammpstrj': frame for step, frame in split_dump(dump)})
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    for name, target in (links or {}).items():
        path = folder / name
        path.unlink(missing_ok=True)
        path.symlink_to(posixpath.relpath(Path(target).absolute(), folder.absolute()))
        written.append(path)
    return written


@dataclass
class RemoteComputer:
    """One computer of a ``machine.json``: the options of ``aiida-lisei setup remote`` and the roles it runs.

    ``options`` uses the option names of ``setup remote`` (``hostname``, ``username``, ``port``,
    ``key_filename``, ``transport``, ``scheduler``, ``work_dir``, ``engine_dir``, ``partition``,
    ``account``, ``mpiprocs_per_machine``, ``mpirun_command``, ``prepend_text``); ``missing`` says what the
    file does not give.
    """

    options: dict[str, Any]
    roles: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _engine_dir(command: str) -> str | None:
    """Return the folder of the executable of a DP-GEN ``command`` when it is an absolute path."""
    words = [word for word in shlex.split(command or '') if not word.startswith('-')]
    launchers = {'mpirun', 'mpiexec', 'srun', 'ibrun', 'aprun'}
    words = [word for word in words if posixpath.basename(word) not in launchers and not word.isdigit()]
    if words and words[0].startswith('/'):
        return posixpath.dirname(words[0])
    return None


def _account(flags: Sequence[str]) -> str | None:
    """Return the account of ``#SBATCH -A X`` / ``--account=X`` (``#BSUB -P``, ``#PBS -A``) custom flags."""
    for flag in flags:
        match = re.match(r'#(?:SBATCH|PBS)\s+(?:-A\s*|--account[= ])(\S+)|#BSUB\s+-P\s+(\S+)', flag.strip())
        if match:
            return match.group(1) or match.group(2)
    return None


def _prepend_text(resources: Mapping[str, Any]) -> str:
    """Return the job-script lines of dpdispatcher's ``module_list``, ``source_list`` and ``envs``."""
    lines = [f'module load {module}' for module in resources.get('module_list', [])]
    lines += [f'source {path}' for path in resources.get('source_list', [])]
    lines += [f'export {name}={shlex.quote(str(value))}' for name, value in resources.get('envs', {}).items()]
    return '\n'.join(lines)


def _role_computer(role: str, section: Mapping[str, Any]) -> RemoteComputer:
    """Return the computer of one ``machine.json`` section (``train``, ``model_devi`` or ``fp``)."""
    machine = section.get('machine', {})
    resources = section.get('resources', {})
    missing = []
    batch = str(machine.get('batch_type', resources.get('batch_type', ''))).lower()
    context = str(machine.get('context_type', '')).lower().removesuffix('context')
    if batch not in SCHEDULERS:
        missing.append(f'{role}.machine.batch_type {batch or None!r} (supported: {sorted(SCHEDULERS)})')
    if context not in TRANSPORTS:
        missing.append(f'{role}.machine.context_type {context or None!r} (supported: ssh, local, lazylocal)')
    profile = machine.get('remote_profile', {})
    transport = TRANSPORTS.get(context)
    hostname = profile.get('hostname') if transport == 'core.ssh' else 'localhost'
    work_dir = machine.get('remote_root')
    if not hostname:
        missing.append(f'{role}.machine.remote_profile.hostname')
    if not work_dir or not posixpath.isabs(work_dir):
        missing.append(f'{role}.machine.remote_root (an absolute path: the work dir of the jobs)')
    options = {
        'hostname': hostname,
        'username': profile.get('username') if transport == 'core.ssh' else None,
        'port': profile.get('port') if transport == 'core.ssh' else None,
        'key_filename': profile.get('key_filename') if transport == 'core.ssh' else None,
        'transport': transport,
        'scheduler': SCHEDULERS.get(batch),
        'work_dir': work_dir,
        'engine_dir': _engine_dir(section.get('command', '')),
        'partition': resources.get('queue_name') or None,
        'account': _account(resources.get('custom_flags', [])),
        'mpiprocs_per_machine': resources.get('cpu_per_node'),
        'mpirun_command': 'srun -n {tot_num_mpiprocs}'
        if batch == 'slurm'
        else 'mpirun -np {tot_num_mpiprocs}',
        'prepend_text': _prepend_text(resources),
    }
    return RemoteComputer(options, [role], missing)


def machine_computers(machine: Mapping[str, Any]) -> list[RemoteComputer]:
    """Return the computers of a DP-GEN ``machine.json`` (api_version 1.0, dpdispatcher's format).

    Sections with the same context (host, user, transport, scheduler, work dir, partition, account,
    prepend text) share one computer; a section given as a list uses its first machine, as DP-GEN does.
    """
    computers: list[RemoteComputer] = []
    absent = [role for role in MACHINE_ROLES if role not in machine]
    if absent:
        computers.append(RemoteComputer({}, [], [f'the section(s) {absent} (dpdispatcher format, api 1.0)']))
    for role in MACHINE_ROLES:
        if role not in machine:
            continue
        section = machine[role][0] if isinstance(machine[role], list) else machine[role]
        computer = _role_computer(role, section)
        keys = [
            key
            for key in computer.options
            if key not in ('engine_dir', 'mpiprocs_per_machine', 'mpirun_command')
        ]
        for other in computers:
            if other.options and all(other.options[key] == computer.options[key] for key in keys):
                other.roles.append(role)
                other.missing.extend(computer.missing)
                other.options['engine_dir'] = other.options['engine_dir'] or computer.options['engine_dir']
                break
        else:
            computers.append(computer)
    return computers
