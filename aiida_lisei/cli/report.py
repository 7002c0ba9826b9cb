"""``aiida-lisei report`` and ``aiida-lisei status``: look at a study (or any step) without reading logs."""

from __future__ import annotations

import datetime
import typing as t
from pathlib import Path

import click

from .utils import PROFILE_OPTION, created, load_profile

if t.TYPE_CHECKING:
    from aiida import orm


def _process(identifier: str) -> orm.ProcessNode:
    """Load the process node of a PK or UUID; fail with a message."""
    from aiida import orm
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    try:
        node = orm.load_node(identifier)
    except (NotExistent, MultipleObjectsError) as exception:
        raise click.ClickException(f'no node {identifier}: {exception}') from exception
    if not isinstance(node, orm.ProcessNode):
        raise click.ClickException(f'node {identifier} is a {type(node).__name__}, not a process')
    return node


@click.command('report')
@click.argument('identifier', metavar='PK')
@click.option(
    '-o',
    '--output',
    type=click.Path(dir_okay=False, path_type=Path),
    help='HTML file (default: report-PK.html).',
)
@PROFILE_OPTION
def cmd_report(identifier: str, output: Path | None, profile_name: str | None) -> None:
    """Write one self-contained HTML page of process PK (a study or any step): settings, tables beside the
    paper, guards and every figure, each with the PK and UUID of its node."""
    load_profile(profile_name)
    from aiida_lisei.reporting.html_report import process_report_html

    node = _process(identifier)
    if not node.is_terminated:
        raise click.ClickException(
            f'process {node.pk} is {node.process_state.value}: use `aiida-lisei status`'
        )
    path = output or Path(f'report-{node.pk}.html')
    path.write_text(process_report_html(node), encoding='utf-8')
    created('report', str(path), f'{path.stat().st_size / 1024:.0f} KiB')


def _elapsed(node: orm.ProcessNode, now: datetime.datetime) -> str:
    end = node.mtime if node.is_terminated else now
    return str(datetime.timedelta(seconds=round((end - node.ctime).total_seconds())))


def step_progress(node: orm.ProcessNode) -> tuple[float, str] | None:
    """Return the fraction of ``node``'s own work done and what it counts, for the steps that can tell:
    ``lisei.restraint_md`` (MD segments finished of those the run needs) and ``lisei.concurrent_learning``
    (iterations finished of ``max_iterations``: an upper bound, it may converge earlier); ``None`` else."""
    from aiida import orm

    called = node.base.links.get_outgoing().all()
    if node.process_label == 'RestraintMdWorkChain':
        n_steps = node.inputs.md.parameters['n_steps']
        segment = node.inputs.segment_steps.value if 'segment_steps' in node.inputs else n_steps
        needed = -(-n_steps // segment)
        finished = sum(
            1
            for link in called
            if isinstance(link.node, orm.CalcJobNode)
            and link.node.process_type == 'aiida.calculations:lisei.restraint_md'
            and link.node.is_finished_ok
        )
        return min(finished / needed, 1.0), f'{finished} of {needed} MD segments'
    if node.process_label == 'ConcurrentLearningWorkChain':
        total = node.inputs.max_iterations.value
        finished = sum(1 for link in called if link.link_label.endswith('_summarize'))
        return min(finished / total, 1.0), f'{finished} of at most {total} iterations'
    return None


def time_left(elapsed: float, fraction: float) -> float | None:
    """Return the seconds left if the rest goes at the pace so far (``elapsed`` s for ``fraction`` done);
    ``None`` before anything is done."""
    if fraction <= 0:
        return None
    return elapsed * (1.0 - fraction) / fraction


def status_lines(node: orm.ProcessNode, now: datetime.datetime | None = None) -> list[str]:
    """Return the status of ``node`` and its steps: state, elapsed time, progress and time left of the steps
    that can tell (:func:`step_progress`), running jobs and where they run, and, for a running study, the
    steps still to come (not estimated: their cost depends on what the earlier steps produce)."""
    from aiida import orm

    now = now or datetime.datetime.now(datetime.UTC)
    state = 'finished ok' if node.is_finished_ok else node.process_state.value
    if node.is_finished and not node.is_finished_ok:
        state = f'finished [{node.exit_status}] {node.exit_message or ""}'.strip()
    lines = [f'{node.process_label}<{node.pk}>: {state}, {_elapsed(node, now)}']
    links = sorted(node.base.links.get_outgoing().all(), key=lambda link: link.node.ctime)
    done: list[str] = []
    for link in links:
        child = link.node
        if not isinstance(child, orm.ProcessNode):
            continue
        done.append(link.link_label)
        child_state = 'ok' if child.is_finished_ok else child.process_state.value
        if child.is_finished and not child.is_finished_ok:
            child_state = f'failed [{child.exit_status}]'
        lines.append(
            f'  {link.link_label}: {child.process_label}<{child.pk}> {child_state}, {_elapsed(child, now)}'
        )
        progress = None if child.is_terminated else step_progress(child)
        if progress is not None:
            fraction, counted = progress
            left = time_left((now - child.ctime).total_seconds(), fraction)
            estimate = 'time left not yet estimated'
            if left is not None:
                estimate = f'about {datetime.timedelta(seconds=round(left))} left at the pace so far'
            lines.append(f'    progress: {counted} ({100 * fraction:.0f} %), {estimate}')
        if not child.is_terminated:
            for job in child.called_descendants:
                if isinstance(job, orm.CalcJobNode) and not job.is_terminated:
                    where = job.computer.label if job.computer else '?'
                    lines.append(
                        f'    running {job.process_label}<{job.pk}> on {where} '
                        f'(job {job.get_job_id() or "-"}), {_elapsed(job, now)}'
                    )
    if node.process_label == 'StudyWorkChain' and not node.is_terminated:
        from aiida_lisei.workchains.study import STEPS

        steps = node.inputs.steps.get_dict()
        to_come = [name for name in STEPS if steps.get(name) is not None and name not in done]
        if to_come:
            lines.append(f'  to come: {", ".join(to_come)}')
    return lines


@click.command('status')
@click.argument('identifier', metavar='PK')
@PROFILE_OPTION
def cmd_status(identifier: str, profile_name: str | None) -> None:
    """Where process PK (a study or any step) is: each step's state and time, the jobs running and on which
    computer, the steps still to come."""
    load_profile(profile_name)
    click.echo('\n'.join(status_lines(_process(identifier))))
