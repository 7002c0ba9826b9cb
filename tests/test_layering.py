"""The layers of the package: pure numerics and programs import no AiiDA, imports only point down.

The layers, lowest first (``docs/developer.md`` draws them): ``common`` → ``science`` → ``data`` →
``formats`` → ``engines`` → ``reporting`` → ``structures`` → ``calculations`` → ``parsers`` →
``protocols`` → ``workchains`` → ``cli``. A module may import modules of its own layer and of the layers
below, never above; it never imports a private name (``_x``) of another module; a CalcJob or parser module
imports of its own package only ``base``; the engines (the compute-side programs) import nothing of the
AiiDA layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / 'aiida_lisei'

#: The layers, lowest first.
LAYERS = (
    'common',
    'science',
    'data',
    'formats',
    'engines',
    'reporting',
    'structures',
    'calculations',
    'parsers',
    'protocols',
    'workchains',
    'cli',
)
#: Packages of one module per process: a module imports of its own package only ``base``.
ONE_PROCESS_PER_MODULE = ('calculations', 'parsers')
#: Layers whose modules import no AiiDA (and the pure modules of the AiiDA layers).
PURE_FOLDERS = ('common', 'science', 'formats', 'engines', 'reporting')
PURE_MODULES = [
    *sorted(
        '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        for folder in PURE_FOLDERS
        for path in (PACKAGE / folder).glob('*.py')
    ),
    'aiida_lisei.data.frames',
    'aiida_lisei.data.level_of_theory',
    'aiida_lisei.structures.builders',
    'aiida_lisei.structures.parameters',
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every ``aiida_lisei`` import of ``path`` (function-level ones too)."""
    module = _module_name(path)
    package = module if path.name == '__init__.py' else module.rsplit('.', 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ''
            if node.level:
                base = package.split('.')
                base = base[: len(base) - (node.level - 1)]
                target = '.'.join([*base, *([target] if target else [])])
            if target.startswith('aiida_lisei'):
                found.append((target, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [
                (alias.name, [], node.lineno) for alias in node.names if alias.name.startswith('aiida_lisei')
            ]
    return found


def _layer(module: str) -> str | None:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


MODULES = sorted(PACKAGE.rglob('*.py'))


def test_every_package_is_a_layer():
    """Every subpackage of ``aiida_lisei`` is one of the layers (no loose top-level modules)."""
    loose = [path.name for path in PACKAGE.glob('*.py') if path.name != '__init__.py']
    folders = sorted(path.name for path in PACKAGE.iterdir() if (path / '__init__.py').exists())
    assert not loose, f'top-level modules outside the layers: {loose}'
    assert set(folders) == set(LAYERS), folders


@pytest.mark.parametrize('path', MODULES, ids=lambda path: _module_name(path))
def test_imports_point_down(path):
    """No import runs up a layer, no private name crosses modules, a one-process module imports ``base``."""
    module = _module_name(path)
    layer = _layer(module)
    problems = []
    for target, names, line in _imports(path):
        target_layer = _layer(target)
        if (
            layer is not None
            and target_layer is not None
            and LAYERS.index(target_layer) > LAYERS.index(layer)
        ):
            problems.append(f'line {line}: {layer} imports {target} ({target_layer} is above)')
        private = [name for name in names if name.startswith('_') and not name.startswith('__')]
        if private and target != module:
            problems.append(f'line {line}: private names {private} of {target}')
        shared = (f'aiida_lisei.{layer}', f'aiida_lisei.{layer}.base')
        if layer in ONE_PROCESS_PER_MODULE and target_layer == layer and target not in shared:
            problems.append(f'line {line}: {module} imports its sibling {target} (only `base` is shared)')
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('path', sorted((PACKAGE / 'engines').glob('*.py')), ids=lambda path: path.stem)
def test_engines_import_no_aiida_layer(path):
    """The compute-side programs import nothing of calculations, parsers or work chains."""
    aiida_layers = {'calculations', 'parsers', 'workchains', 'protocols', 'cli'}
    assert not [target for target, _, _ in _imports(path) if _layer(target) in aiida_layers]


@pytest.mark.parametrize('module', PURE_MODULES)
def test_module_imports_no_aiida(module):
    """Importing the module in a fresh interpreter leaves ``aiida`` out of ``sys.modules``."""
    code = f'import sys, {module}; sys.exit(1 if "aiida" in sys.modules else 0)'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f'{module} imports aiida\n{result.stderr[-2000:]}'
