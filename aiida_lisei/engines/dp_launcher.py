"""``lisei-dp``: DeePMD-kit's ``dp`` command, with its PyTorch backend usable beside another PyTorch.

The ``deepmd-kit`` 3.2.0 wheel ships its PyTorch operator library (``libdeepmd_op_pt.so``) built against
torch 2.11.0 (a ~6 GB CUDA build on PyPI), and ``dp --pt`` stops when the runtime torch differs ("The version
of PyTorch used to compile this deepmd-kit package is 2.11.0 ..."). The environment here has the CPU build
of torch 2.13 that CHGNet needs. DeePMD-kit has a pure-PyTorch path for when its operator library is absent
(``deepmd.pt.cxx_op.ENABLE_CUSTOMIZED_OP`` false): training, freezing and ``dp test`` of the standard
descriptors run on it; model compression (tabulated embedding, a custom operator) does not.

This launcher takes that path only when it has to: with ``--pt``/``--pytorch`` and a runtime torch that is
not the one the wheel's operators were built for, it points DeePMD-kit's library folder at an empty one
before the PyTorch backend is imported, and says so on stderr. Otherwise it is plain ``dp``. LAMMPS's
``pair_style deepmd`` loads a ``.pth`` model through the C++ library and still needs the matching torch.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

#: The command-line flags of DeePMD-kit's PyTorch backend.
PYTORCH_FLAGS = ('--pt', '--pytorch')


def operators_match_torch() -> bool:
    """Return whether the installed torch is the one DeePMD-kit's PyTorch operators were built against."""
    import torch
    from deepmd.env import GLOBAL_CONFIG
    from packaging.version import Version

    built = GLOBAL_CONFIG.get('pt_version', '')
    return bool(built) and Version(torch.__version__).public == built


def use_pure_pytorch() -> str:
    """Make DeePMD-kit's PyTorch backend skip its operator library; return the message to print."""
    import deepmd.env
    import torch

    built = deepmd.env.GLOBAL_CONFIG.get('pt_version', '?')
    deepmd.env.SHARED_LIB_DIR = Path(tempfile.mkdtemp(prefix='lisei-dp-no-ops-'))
    return (
        f'lisei-dp: deepmd-kit operators built for torch {built}, runtime torch {torch.__version__}: '
        'the pure-PyTorch path (no custom operators: no model compression)'
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``dp`` with ``argv`` (default: the command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(flag in argv for flag in PYTORCH_FLAGS) and not operators_match_torch():
        print(use_pure_pytorch(), file=sys.stderr)
    from deepmd.main import main as dp_main

    sys.argv = ['dp', *argv]
    result = dp_main()
    return int(result or 0)


if __name__ == '__main__':
    sys.exit(main())
