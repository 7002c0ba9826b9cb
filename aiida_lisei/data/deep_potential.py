"""``DeepPotentialData`` (``lisei.deep_potential``): a frozen DeePMD-kit model and what it was trained on.

The repository holds the frozen model and, when the model was compressed (``dp compress``), the compressed
one (faster MD, same accuracy within the tabulation error), named by the DeePMD-kit backend:
``model.pb`` / ``model_compressed.pb`` (TensorFlow) or ``model.pth`` / ``model_compressed.pth`` (PyTorch),
because LAMMPS's DeePMD plugin and ``dp`` pick the backend from the file's extension. Attributes make
models queryable and self-describing:

* ``type_map`` (element symbols, order = atom types), ``descriptor_type`` (e.g. ``se_e2_a``),
  ``rcut`` and ``rcut_smth`` (Å), ``sel`` (maximum neighbours per type within ``rcut``),
  ``neurons`` (``{'embedding': [...], 'fitting': [...]}``);
* ``training_steps`` (steps done), ``seed`` (the one seed of descriptor, fitting net and training);
* ``deepmd_version``, ``deepmd_backend`` (``'tensorflow'`` or ``'pytorch'``), ``compressed`` (a compressed
  model exists);
* ``level_of_theory_key`` of the training set (see :mod:`aiida_lisei.data.level_of_theory`), so that a
  model is never used to explore or compared with labels at another level of theory.

:func:`model_metadata` reads the attributes from a DeePMD input dict (pure, no AiiDA).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiida.orm import Data, SinglefileData

from aiida_lisei.data.frames import STUDY_TYPE_MAP

if TYPE_CHECKING:
    from deepmd.infer import DeepPot

__all__ = (
    'BACKEND_FLAGS',
    'BACKEND_SUFFIXES',
    'COMPRESSED_FILENAME',
    'MODEL_FILENAME',
    'MODEL_FILE_MAGIC',
    'DeepPotentialData',
    'backend_filenames',
    'check_model_file',
    'ensemble_models',
    'model_filename',
    'model_metadata',
    'model_suffix',
    'models_type_map',
)

#: File extension of a frozen model per DeePMD-kit backend (LAMMPS and ``dp`` choose the backend by it).
BACKEND_SUFFIXES = {'tensorflow': '.pb', 'pytorch': '.pth'}
#: The ``dp`` command-line flag of each backend (DeePMD-kit 3), always given explicitly.
BACKEND_FLAGS = {'tensorflow': '--tf', 'pytorch': '--pt'}
#: Repository names of the frozen and the compressed model of the TensorFlow backend (the default).
MODEL_FILENAME = 'model.pb'
COMPRESSED_FILENAME = 'model_compressed.pb'


def backend_filenames(backend: str = 'tensorflow') -> tuple[str, str]:
    """Return the repository names ``(model, compressed model)`` of a ``backend`` model; raise ``ValueError``
    on a backend other than those of :data:`BACKEND_SUFFIXES`."""
    if backend not in BACKEND_SUFFIXES:
        raise ValueError(f'unknown DeePMD-kit backend `{backend}`; known: {sorted(BACKEND_SUFFIXES)}')
    suffix = BACKEND_SUFFIXES[backend]
    return f'model{suffix}', f'model_compressed{suffix}'


_REQUIRED = ('type_map', 'descriptor_type', 'rcut', 'sel', 'neurons', 'seed', 'deepmd_version')


def model_metadata(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return the model attributes stored from a DeePMD input dict (``model``, ``training`` sections).

    ``seed`` is the descriptor's seed (the CalcJob sets the same seed everywhere); ``training_steps`` is
    ``training.numb_steps`` (the parser replaces it by the steps actually done).
    """
    model = parameters['model']
    descriptor = model['descriptor']
    return {
        'type_map': list(model['type_map']),
        'descriptor_type': descriptor['type'],
        'rcut': float(descriptor['rcut']),
        'rcut_smth': float(descriptor.get('rcut_smth', descriptor['rcut'])),
        'sel': descriptor['sel'] if isinstance(descriptor['sel'], (str, int)) else list(descriptor['sel']),
        'neurons': {
            'embedding': list(descriptor.get('neuron', [])),
            'fitting': list(model.get('fitting_net', {}).get('neuron', [])),
        },
        'seed': descriptor.get('seed'),
        'training_steps': parameters.get('training', {}).get('numb_steps'),
    }


#: How a model file of each suffix starts: a TensorFlow GraphDef (protobuf field 1, length-delimited) and a
#: TorchScript archive (a zip).
MODEL_FILE_MAGIC = {'.pb': b'\x0a', '.pth': b'PK\x03\x04'}


def check_model_file(head: bytes, filename: str) -> None:
    """Raise ``ValueError`` unless ``head``, the first bytes of ``filename``, can start a frozen DeePMD model
    of its suffix (``.pb``: TensorFlow, ``.pth``: PyTorch): an empty or garbage file is refused before it is
    stored or submitted, instead of failing in the engine."""
    if not head:
        raise ValueError(f'the model file `{filename}` is empty: give the file `dp freeze` wrote')
    magic = MODEL_FILE_MAGIC.get(Path(filename).suffix)
    if magic is not None and not head.startswith(magic):
        kind = 'a TensorFlow GraphDef' if magic == MODEL_FILE_MAGIC['.pb'] else 'a TorchScript (zip) archive'
        raise ValueError(
            f'the model file `{filename}` does not start as {kind} does ({head[:4]!r}): not a frozen DeePMD '
            'model; give the file `dp freeze` wrote'
        )


def _content(source: str | Path | bytes | IO[bytes]) -> bytes:
    """Return the bytes of a path, a binary file handle, or bytes."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, str | Path):
        return Path(source).read_bytes()
    return source.read()


class DeepPotentialData(Data):
    """A frozen DeePMD-kit model (``model.pb``; optional ``model_compressed.pb``) with its metadata.

    :param model: the frozen model (path, bytes or binary handle).
    :param compressed_model: the compressed model, optional.
    :param type_map: element symbols in type order.
    :param descriptor_type: DeePMD descriptor, e.g. ``se_e2_a``.
    :param rcut: cut-off radius (Å); ``rcut_smth`` (Å) where the smoothing starts (default ``rcut``).
    :param sel: maximum number of neighbours of each type within ``rcut`` (DPA descriptors: one number).
    :param neurons: ``{'embedding': [...], 'fitting': [...]}`` layer sizes.
    :param seed: the random seed of the training.
    :param deepmd_version: DeePMD-kit version that trained the model, e.g. ``3.2.0``.
    :param training_steps: number of training steps done.
    :param level_of_theory_key: key of the training set's level of theory.
    :param deepmd_backend: DeePMD-kit backend, ``tensorflow`` (``.pb``) or ``pytorch`` (``.pth``).
    """

    def __init__(
        self,
        model: str | Path | bytes | IO[bytes],
        *,
        type_map: Sequence[str],
        descriptor_type: str,
        rcut: float,
        sel: Sequence[int] | int | str,
        neurons: Mapping[str, Sequence[int]],
        seed: int | None,
        deepmd_version: str,
        training_steps: int | None = None,
        level_of_theory_key: str | None = None,
        rcut_smth: float | None = None,
        deepmd_backend: str = 'tensorflow',
        compressed_model: str | Path | bytes | IO[bytes] | None = None,
        **kwargs: Any,
    ) -> None:
        model_name, compressed_name = backend_filenames(deepmd_backend)
        super().__init__(**kwargs)
        self.base.repository.put_object_from_bytes(_content(model), model_name)
        if compressed_model is not None:
            self.base.repository.put_object_from_bytes(_content(compressed_model), compressed_name)
        attributes = {
            'type_map': [str(element) for element in type_map],
            'descriptor_type': str(descriptor_type),
            'rcut': float(rcut),
            'rcut_smth': float(rcut if rcut_smth is None else rcut_smth),
            'sel': sel if isinstance(sel, (str, int)) else [int(value) for value in sel],
            'neurons': {name: [int(value) for value in layers] for name, layers in neurons.items()},
            'seed': None if seed is None else int(seed),
            'training_steps': None if training_steps is None else int(training_steps),
            'deepmd_version': str(deepmd_version),
            'deepmd_backend': str(deepmd_backend),
            'compressed': compressed_model is not None,
            'level_of_theory_key': level_of_theory_key,
        }
        self.base.attributes.set_many(attributes)

    def _validate(self) -> bool:
        """Refuse to store a model without a file or required metadata."""
        super()._validate()
        model_name = backend_filenames(self.deepmd_backend)[0]
        if model_name not in self.base.repository.list_object_names():
            raise ValueError(f'no `{model_name}` in the repository')
        missing = [name for name in _REQUIRED if self.base.attributes.get(name, None) is None]
        if missing:
            raise ValueError(f'missing attributes {missing}')
        for name in self.base.repository.list_object_names():  # the first bytes only, not the whole model
            with self.base.repository.open(name, mode='rb') as handle:
                check_model_file(handle.read(8), name)
        return True

    # -- attributes -----------------------------------------------------------------------------------------

    @property
    def type_map(self) -> list[str]:
        """Element symbols in type order."""
        return self.base.attributes.get('type_map')

    @property
    def descriptor_type(self) -> str:
        """DeePMD descriptor type, e.g. ``se_e2_a``."""
        return self.base.attributes.get('descriptor_type')

    @property
    def rcut(self) -> float:
        """Cut-off radius (Å)."""
        return self.base.attributes.get('rcut')

    @property
    def sel(self) -> list[int] | int | str:
        """Maximum number of neighbours of each type within ``rcut`` (one number over all types for the DPA
        descriptors, ``'auto'`` where DeePMD-kit counts them)."""
        return self.base.attributes.get('sel')

    @property
    def neurons(self) -> dict[str, list[int]]:
        """Layer sizes ``{'embedding': [...], 'fitting': [...]}``."""
        return self.base.attributes.get('neurons')

    @property
    def seed(self) -> int | None:
        """Random seed of the training."""
        return self.base.attributes.get('seed')

    @property
    def training_steps(self) -> int | None:
        """Number of training steps done."""
        return self.base.attributes.get('training_steps')

    @property
    def deepmd_version(self) -> str:
        """DeePMD-kit version that trained the model."""
        return self.base.attributes.get('deepmd_version')

    @property
    def deepmd_backend(self) -> str:
        """DeePMD-kit backend (``tensorflow`` or ``pytorch``); ``Node.backend`` is the AiiDA storage."""
        return self.base.attributes.get('deepmd_backend')

    @property
    def compressed(self) -> bool:
        """Whether a compressed model is stored too."""
        return self.base.attributes.get('compressed')

    @property
    def level_of_theory_key(self) -> str | None:
        """Level-of-theory key of the training set."""
        return self.base.attributes.get('level_of_theory_key')

    # -- files ----------------------------------------------------------------------------------------------

    def _filename(self, compressed: bool) -> str:
        if compressed and not self.compressed:
            raise ValueError('this model has no compressed version')
        return backend_filenames(self.deepmd_backend)[1 if compressed else 0]

    def filename(self, compressed: bool = False) -> str:
        """Repository name of the frozen (or compressed) model: ``model[_compressed].pb`` or ``.pth``."""
        return self._filename(compressed)

    def get_model_bytes(self, compressed: bool = False) -> bytes:
        """Return the content of the frozen (or compressed) model."""
        return self.base.repository.get_object_content(self._filename(compressed), mode='rb')

    def write_model(
        self, directory: str | Path, filename: str | None = None, compressed: bool = False
    ) -> Path:
        """Write the frozen (or compressed) model into ``directory`` (default name ``model[_compressed]`` with
        the backend's extension); return its path."""
        path = Path(directory) / (filename or self._filename(compressed))
        path.write_bytes(self.get_model_bytes(compressed))
        return path

    @contextlib.contextmanager
    def as_path(self, compressed: bool = False) -> Iterator[Path]:
        """Context manager giving a temporary path of the model file (removed on exit)."""
        with tempfile.TemporaryDirectory() as directory:
            yield self.write_model(directory, compressed=compressed)

    def get_deep_pot(self, compressed: bool = False) -> DeepPot:
        """Load the model with ``deepmd.infer.DeepPot`` (evaluate energies eV, forces eV/Å, virials eV)."""
        from deepmd.infer import DeepPot

        with self.as_path(compressed) as path:
            return DeepPot(str(path))


def model_filename(node: DeepPotentialData | SinglefileData) -> str:
    """Return the repository name of the frozen model to run: a ``DeepPotentialData``'s compressed model
    when it has one (about 3x faster in LAMMPS), else its frozen model; a ``SinglefileData``'s file."""
    if isinstance(node, SinglefileData):
        return node.filename
    model_name, compressed_name = backend_filenames(node.deepmd_backend)
    return compressed_name if compressed_name in node.base.repository.list_object_names() else model_name


def model_suffix(node: DeepPotentialData | SinglefileData) -> str:
    """Return the extension the model's file must keep where it runs (``.pb`` or ``.pth``): by the
    ``DeepPotentialData``'s backend, by a ``SinglefileData``'s file name (``.pb`` if it has none)."""
    if isinstance(node, SinglefileData):
        return Path(node.filename).suffix or BACKEND_SUFFIXES['tensorflow']
    return BACKEND_SUFFIXES[node.deepmd_backend]


def models_type_map(models: Mapping[str, DeepPotentialData | SinglefileData]) -> tuple[str, ...]:
    """Return the type map shared by ``models``: their ``type_map`` attribute, else the study's Li P S Cl
    (a plain ``SinglefileData`` .pb has none). Raises ``ValueError`` if two models declare different ones."""
    maps = {tuple(node.base.attributes.get('type_map', STUDY_TYPE_MAP)) for node in models.values()}
    if len(maps) > 1:
        raise ValueError(f'the models have different type maps: {sorted(maps)}')
    return maps.pop() if maps else STUDY_TYPE_MAP


def ensemble_models(
    model: DeepPotentialData | SinglefileData, others: Mapping[str, DeepPotentialData | SinglefileData]
) -> dict[str, DeepPotentialData | SinglefileData]:
    """Return the models of an MD with a model deviation: ``model`` first (it drives the dynamics), then
    ``others`` in sorted key order, as ``model_0000``, ``model_0001``, ...; without ``others``, ``model``
    twice (an exploration needs two models; the deviation is then zero)."""
    ordered = [others[key] for key in sorted(others)] or [model]
    return {f'model_{index:04d}': node for index, node in enumerate([model, *ordered])}
