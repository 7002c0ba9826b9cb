"""Take what was made here back out, in the formats DP-GEN and DeePMD-kit read (``aiida-lisei export``).

* :func:`export_training_set`: a ``TrainingSetData`` as deepmd/npy, one folder per system, and a
  provenance note (``provenance.json``) with the UUIDs of the set, of the process that made it and of
  every labelling process;
* :func:`export_model`: the frozen model of a ``DeepPotentialData`` (``model.pb``: plain LAMMPS with
  ``pair_style deepmd`` and ``dp test`` read it);
* :func:`export_iteration`: the explorations of one iteration of ``lisei.concurrent_learning`` in DP-GEN's
  layout (``iter.<i>/01.model_devi/task.<system>.<task>/``, see :mod:`aiida_lisei.formats.dpgen`), with
  the ensemble as ``iter.<i>/00.train/graph.<i>.pb``: each task's ``input.lammps`` runs in place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiida import orm
from aiida.common.links import LinkType

from aiida_lisei.data.deep_potential import COMPRESSED_FILENAME, MODEL_FILENAME, DeepPotentialData
from aiida_lisei.data.training_set import TrainingSetData
from aiida_lisei.formats.dpgen import iteration_folder, task_folder, write_model_devi_task

__all__ = (
    'PROVENANCE_FILENAME',
    'explorations',
    'export_iteration',
    'export_model',
    'export_training_set',
    'resolve_output',
)

#: The provenance note written next to exported data.
PROVENANCE_FILENAME = 'provenance.json'

#: Call-link label of an exploration of ``lisei.concurrent_learning``: iteration, system, temperature key.
_EXPLORE_LABEL = re.compile(r'^iteration_(\d+)_explore_(.+)_(T[0-9p]+)$')


def resolve_output(node: orm.Node, valid_type: type, name: str) -> orm.Node:
    """Return ``node`` if it is a ``valid_type``, else the process output ``name`` of that type.

    :raises ValueError: naming what the node is and what was expected.
    """
    if isinstance(node, valid_type):
        return node
    if (
        isinstance(node, orm.ProcessNode)
        and name in node.outputs
        and isinstance(node.outputs[name], valid_type)
    ):
        return node.outputs[name]
    raise ValueError(
        f'<{node.pk}> is a {type(node).__name__}: give a {valid_type.__name__} or a process with a '
        f'`{name}` output'
    )


def _note(node: orm.Node) -> dict[str, Any]:
    """Return the provenance of ``node``: its UUID, PK and the process that created it."""
    creator = node.creator if isinstance(node, orm.Data) else None
    note = {'uuid': node.uuid, 'pk': node.pk, 'node_type': node.node_type}
    if creator is not None:
        note['created_by'] = {'uuid': creator.uuid, 'pk': creator.pk, 'process_label': creator.process_label}
    return note


def export_training_set(node: orm.Node, directory: Path) -> list[Path]:
    """Write a training set as deepmd/npy folders ``directory/<system>`` and ``provenance.json``.

    :param node: a ``TrainingSetData``, or a process with a ``training_set`` output.
    :return: the system folders.
    """
    training_set = resolve_output(node, TrainingSetData, 'training_set')
    directory.mkdir(parents=True, exist_ok=True)
    paths = training_set.to_deepmd_npy(directory)
    note = {
        'training_set': _note(training_set),
        'type_map': training_set.type_map,
        'level_of_theory': training_set.level_of_theory,
        'labelled_by': training_set.base.attributes.get('labelled_by'),
        'systems': {
            summary['label']: {
                'folder': path.name,
                'nframes': summary['nframes'],
                'formula': summary['formula'],
            }
            for summary, path in zip(training_set.systems, paths, strict=True)
        },
    }
    (directory / PROVENANCE_FILENAME).write_text(json.dumps(note, indent=1))
    return paths


def export_model(node: orm.Node, path: Path, compressed: bool = False) -> Path:
    """Write the frozen model of ``node`` (a ``DeepPotentialData`` or a process with a ``model`` output).

    :param compressed: write the compressed model (``dp compress``) instead of the frozen one.
    :return: ``path``; ``<path>.provenance.json`` notes the model's UUID and metadata.
    """
    model = resolve_output(node, DeepPotentialData, 'model')
    if compressed and not model.compressed:
        raise ValueError(f'the model <{model.pk}> has no compressed version: export it without --compressed')
    path.parent.mkdir(parents=True, exist_ok=True)
    model.write_model(path.parent, path.name, compressed=compressed)
    note = {'model': _note(model), 'file': COMPRESSED_FILENAME if compressed else MODEL_FILENAME}
    note.update(model.base.attributes.all)
    path.with_name(path.name + '.' + PROVENANCE_FILENAME).write_text(json.dumps(note, indent=1))
    return path


def _file(calculation: orm.CalcJobNode, name: str) -> str:
    """Return a file of ``calculation``: its retrieved copy, else the input copy in its repository."""
    retrieved = calculation.outputs.retrieved if 'retrieved' in calculation.outputs else None
    if retrieved is not None and name in retrieved.base.repository.list_object_names():
        return retrieved.base.repository.get_object_content(name)
    return calculation.base.repository.get_object_content(name)


def _write_models(calculation: orm.CalcJobNode, train: Path) -> dict[str, Path]:
    """Write the ensemble of an exploration as DP-GEN's ``00.train/graph.<i>.pb`` (once per iteration);
    return the names its ``input.lammps`` reads (``model_<i>.pb``, in the sorted order of the ``models``
    input, as ``lisei.exploration`` writes them) and the graphs they are."""
    models = calculation.inputs.models if 'models' in calculation.inputs else {}
    names = {}
    for index, key in enumerate(sorted(models)):
        graph = train / f'graph.{index:03d}.pb'
        if not graph.exists():
            train.mkdir(parents=True, exist_ok=True)
            models[key].write_model(train, graph.name)
        names[f'model_{index}.pb'] = graph
    return names


def explorations(node: orm.WorkflowNode, iteration: int) -> dict[tuple[str, str], orm.CalcJobNode]:
    """Return the explorations of one iteration of ``lisei.concurrent_learning``, by (system, T key)."""
    found = {}
    for link in node.base.links.get_outgoing(link_type=LinkType.CALL_CALC).all():
        match = _EXPLORE_LABEL.match(link.link_label)
        if match and int(match.group(1)) == iteration:
            found[(match.group(2), match.group(3))] = link.node
    return found


def export_iteration(node: orm.WorkflowNode, directory: Path, iteration: int | None = None) -> list[Path]:
    """Write the explorations of one iteration in DP-GEN's layout; return the task folders.

    Systems are numbered in the sorted order of the ``structures`` input (``sys_000``, ... from an import
    keep DP-GEN's ``sys_configs`` indices), tasks per system in the order of their temperatures.

    :param node: a ``lisei.concurrent_learning`` process.
    :param iteration: 1-based (``iter.000000`` is the first); default: the last one that explored.
    """
    if not isinstance(node, orm.WorkflowNode) or node.process_label != 'ConcurrentLearningWorkChain':
        raise ValueError(f'<{node.pk}> is not a lisei.concurrent_learning process')
    if iteration is None:
        labels = [
            link.link_label for link in node.base.links.get_outgoing(link_type=LinkType.CALL_CALC).all()
        ]
        done = [int(match.group(1)) for match in map(_EXPLORE_LABEL.match, labels) if match]
        if not done:
            raise ValueError(f'<{node.pk}> has run no exploration yet')
        iteration = max(done)
    found = explorations(node, iteration)
    if not found:
        raise ValueError(f'<{node.pk}> has no exploration in iteration {iteration}')
    systems = (
        sorted(node.inputs.structures) if 'structures' in node.inputs else sorted({key[0] for key in found})
    )
    root = directory / iteration_folder(iteration) / '01.model_devi'
    train = directory / iteration_folder(iteration) / '00.train'
    folders, tasks = [], {}
    counters: dict[str, int] = {}
    for (system, _), calculation in sorted(
        found.items(), key=lambda item: (item[0][0], item[1].inputs.parameters['temperature'])
    ):
        parameters = calculation.inputs.parameters.get_dict()
        task = counters.get(system, 0)
        counters[system] = task + 1
        folder = root / task_folder(systems.index(system), task)
        job = {
            'system': system,
            'temps': parameters['temperature'],
            'press': parameters.get('pressure'),
            'ensemble': parameters.get('ensemble', 'nvt'),
            'nsteps': parameters['n_steps'],
            'trj_freq': parameters.get('stride'),
            'calcjob_uuid': calculation.uuid,
        }
        write_model_devi_task(
            folder,
            input_lammps=_file(calculation, 'input.lammps'),
            conf_lmp=_file(calculation, 'structure.data'),
            model_devi=_file(calculation, 'model_devi.out'),
            dump=_file(calculation, 'traj.dump'),
            job=job,
            links={'structure.data': folder / 'conf.lmp', **_write_models(calculation, train)},
        )
        folders.append(folder)
        tasks[folder.name] = calculation.uuid
    note = {'workflow': _note(node), 'iteration': iteration, 'tasks': tasks}
    (root / PROVENANCE_FILENAME).write_text(json.dumps(note, indent=1))
    return folders
