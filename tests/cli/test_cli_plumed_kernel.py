"""``aiida-lisei setup plumed-kernel`` (the download itself is exercised by `make plumed-kernel`)."""

from __future__ import annotations

import pytest

from aiida_lisei.engines.probe import find_plumed_kernel


def test_plumed_kernel_reused(run_cli, monkeypatch):
    """The kernel in the default folder is reused, loaded through the probe, its export line printed."""
    monkeypatch.delenv('PLUMED_KERNEL', raising=False)
    installed = find_plumed_kernel()
    if installed is None:
        pytest.skip('no PLUMED kernel installed: run `aiida-lisei setup plumed-kernel`')
    result = run_cli('setup', 'plumed-kernel')
    assert result.exit_code == 0, result.output
    assert 'exists, reusing' in result.output
    assert 'PLUMED kernel loads (API version' in result.output
    assert result.output.strip().endswith(f'export PLUMED_KERNEL={installed}')


def test_plumed_kernel_broken(run_cli, tmp_path):
    """A file that is not a PLUMED kernel: a clear error."""
    (tmp_path / 'libplumedKernel.so').write_text('not a library')
    result = run_cli('setup', 'plumed-kernel', '--target', tmp_path)
    assert result.exit_code == 1
    assert 'cannot load' in result.output
