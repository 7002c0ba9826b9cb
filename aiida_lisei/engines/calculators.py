"""The ASE calculators that label frames and drive MD: tblite (GFN1-xTB) and CHGNet (no AiiDA).

:data:`CALCULATORS` maps a calculator name to its :class:`CalculatorSpec`: the parameter defaults and their
check, how to build the ASE calculator from checked parameters, and the level of theory of its labels
(:mod:`aiida_lisei.data.level_of_theory`). ``lisei-tblite``/``lisei-chgnet`` (:mod:`.ase_label`) and
``lisei-tblite-md``/``lisei-chgnet-md`` (:mod:`.ase_md`) run any of them.

* ``tblite``: GFN1-xTB (or GFN2-xTB, IPEA1-xTB) through tblite's ASE calculator; ~5 min per single point
  of a 185-atom interface on one core here.
* ``chgnet``: the pretrained universal potential CHGNet (Deng et al., Nat. Mach. Intell. 5, 1031 (2023)),
  trained on the Materials Project trajectories (MPtrj, PBE/PBE+U); per single point on one thread here
  (load ~5 on 2 cores): 0.22 s for Li6PS5Cl (52 atoms), 0.69 s for the interface (185), 1.3 s for the
  demo sandwich (230). Its own level of theory (method ``CHGNet-<model>``): a demo labeller, not the PBE of
  the paper. Its ASE calculator returns the stress in eV/Å³ with ASE's sign (``1/V dE/dε``).

Every calculator returns energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign: negative under
compression).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ASE, tblite and CHGNet are imported lazily (heavy)
    from ase.calculators.calculator import Calculator

__all__ = (
    'CALCULATORS',
    'CHGNET_MAX_ATOMIC_NUMBER',
    'CHGNET_MODELS',
    'TBLITE_MAX_ATOMIC_NUMBER',
    'TBLITE_METHODS',
    'CalculatorSpec',
    'get_calculator',
)

#: Hamiltonians of tblite's ASE calculator.
TBLITE_METHODS = ('GFN1-xTB', 'GFN2-xTB', 'IPEA1-xTB')
#: Heaviest element the GFN parametrisations cover (H-Rn).
TBLITE_MAX_ATOMIC_NUMBER = 86
#: Pretrained CHGNet models: MPtrj (PBE/PBE+U) ``0.3.0`` and ``0.2.0``; ``r2scan`` (MP r2SCAN).
CHGNET_MODELS = ('0.3.0', '0.2.0', 'r2scan')
#: Heaviest element CHGNet's embedding covers (Z = 1-94).
CHGNET_MAX_ATOMIC_NUMBER = 94


def _positive_float(parameters: dict[str, Any], name: str) -> None:
    """Convert ``parameters[name]`` to a positive finite float in place; raise ``ValueError`` if it is not."""
    value = parameters[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f'{name} must be a positive number, got {value!r}')
    parameters[name] = float(value)


def _positive_int(parameters: dict[str, Any], name: str) -> None:
    """Raise ``ValueError`` unless ``parameters[name]`` is an integer >= 1."""
    value = parameters[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')


def _check_tblite(parameters: dict[str, Any]) -> None:
    """Check completed tblite parameters in place."""
    if parameters['method'] not in TBLITE_METHODS:
        raise ValueError(f'method {parameters["method"]!r} is not one of {list(TBLITE_METHODS)}')
    _positive_float(parameters, 'electronic_temperature')
    _positive_float(parameters, 'accuracy')
    _positive_int(parameters, 'max_iterations')


def _build_tblite(parameters: Mapping[str, Any]) -> Calculator:
    """Return a silent tblite ASE calculator (method, electronic_temperature K, accuracy, max_iterations)."""
    from tblite.ase import TBLite

    return TBLite(
        method=parameters['method'],
        electronic_temperature=parameters['electronic_temperature'],
        accuracy=parameters['accuracy'],
        max_iterations=parameters['max_iterations'],
        verbosity=0,
    )


def _tblite_level(parameters: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Level of theory of tblite labels; ``max_iterations`` is left out (it does not change a label)."""
    return {
        'engine': 'tblite',
        'method': parameters['method'],
        'version': version,
        'settings': {name: parameters[name] for name in ('electronic_temperature', 'accuracy')},
    }


def _check_chgnet(parameters: dict[str, Any]) -> None:
    """Check completed CHGNet parameters in place."""
    if parameters['model'] not in CHGNET_MODELS:
        raise ValueError(f'model {parameters["model"]!r} is not one of {list(CHGNET_MODELS)}')
    _positive_int(parameters, 'threads')


@functools.cache
def _chgnet_model(name: str) -> Any:
    """Return the pretrained CHGNet model ``name`` on the CPU, loaded once per process."""
    from chgnet.model import CHGNet

    return CHGNet.load(model_name=name, use_device='cpu', verbose=False)


def _build_chgnet(parameters: Mapping[str, Any]) -> Calculator:
    """Return CHGNet's ASE calculator (stress in eV/Å³, ASE sign) on ``threads`` CPU threads."""
    import torch
    from chgnet.model.dynamics import CHGNetCalculator

    torch.set_num_threads(parameters['threads'])
    # an atom with no neighbour within the 6 Å graph cutoff raises ValueError (a failed frame) instead of
    # getting a meaningless label; the calculator prints the device it runs on
    with contextlib.redirect_stdout(io.StringIO()):
        return CHGNetCalculator(
            _chgnet_model(parameters['model']), use_device='cpu', on_isolated_atoms='error'
        )


def _chgnet_level(parameters: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Level of theory of CHGNet labels: the model is the method (``threads`` does not change a label)."""
    return {'engine': 'chgnet', 'method': f'CHGNet-{parameters["model"]}', 'version': version, 'settings': {}}


@dataclass(frozen=True)
class CalculatorSpec:
    """One ASE calculator: its parameters, how to build it and the level of theory of its labels.

    :param distribution: the Python distribution whose version is recorded.
    :param defaults: every parameter with its default.
    :param checker: checks completed parameters in place (converting types), raises ``ValueError``.
    :param builder: returns the ASE calculator of checked parameters.
    :param level: returns the level of theory of checked parameters and the distribution's version.
    :param max_atomic_number: heaviest element it supports.
    """

    distribution: str
    defaults: Mapping[str, Any]
    checker: Callable[[dict[str, Any]], None]
    builder: Callable[[Mapping[str, Any]], Calculator]
    level: Callable[[Mapping[str, Any], str], dict[str, Any]]
    max_atomic_number: int

    def check_parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``parameters`` completed with :attr:`defaults`; raise ``ValueError`` if invalid."""
        unknown = sorted(set(parameters) - set(self.defaults))
        if unknown:
            raise ValueError(
                f'unknown {self.distribution} parameters {unknown}; known: {sorted(self.defaults)}'
            )
        merged = {**self.defaults, **parameters}
        self.checker(merged)
        return merged

    def make_calculator(self, parameters: Mapping[str, Any]) -> Calculator:
        """Return the ASE calculator of ``parameters`` (completed and checked)."""
        return self.builder(self.check_parameters(parameters))

    def version(self) -> str:
        """Return the installed version of the calculator's distribution."""
        return importlib.metadata.version(self.distribution)

    def level_of_theory(self, parameters: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
        """Return the level of theory of labels of ``parameters`` and ``version`` (default: installed)."""
        return self.level(self.check_parameters(parameters), version or self.version())


#: The calculators, by name. Parameters: tblite ``method``, ``electronic_temperature`` (K), ``accuracy``
#: (scales tblite's SCF and integral thresholds, smaller is tighter), ``max_iterations`` (SCF cycles);
#: CHGNet ``model`` (one of :data:`CHGNET_MODELS`) and ``threads`` (PyTorch CPU threads).
CALCULATORS: dict[str, CalculatorSpec] = {
    'tblite': CalculatorSpec(
        distribution='tblite',
        defaults={
            'method': 'GFN1-xTB',
            'electronic_temperature': 300.0,
            'accuracy': 1.0,
            'max_iterations': 250,
        },
        checker=_check_tblite,
        builder=_build_tblite,
        level=_tblite_level,
        max_atomic_number=TBLITE_MAX_ATOMIC_NUMBER,
    ),
    'chgnet': CalculatorSpec(
        distribution='chgnet',
        defaults={'model': '0.3.0', 'threads': 1},
        checker=_check_chgnet,
        builder=_build_chgnet,
        level=_chgnet_level,
        max_atomic_number=CHGNET_MAX_ATOMIC_NUMBER,
    ),
}


def get_calculator(name: str) -> CalculatorSpec:
    """Return the spec of calculator ``name``; raise ``ValueError`` naming the known ones."""
    try:
        return CALCULATORS[name]
    except KeyError:
        raise ValueError(f'unknown calculator {name!r}; known: {sorted(CALCULATORS)}') from None
