"""The frozen model of the ``dp_train`` parser fixture, shared by ``conftest.py`` and the fuzz suite."""

from __future__ import annotations

from pathlib import Path

FROZEN_MODEL = Path(__file__).parent / 'fixtures' / 'parsers' / 'dp_train' / 'default' / 'frozen_model.pb'


def parser_fixture_model(level_of_theory_key: str | None = None):
    """Return the parser fixture's frozen model (Li P S Cl, se_e2_a, rcut 5 Å) as an unstored
    ``DeepPotentialData`` with the given ``level_of_theory_key``."""
    from aiida_lisei.data.deep_potential import DeepPotentialData

    return DeepPotentialData(
        FROZEN_MODEL,
        type_map=['Li', 'P', 'S', 'Cl'],
        descriptor_type='se_e2_a',
        rcut=5.0,
        sel=[36, 12, 16, 22],
        neurons={'embedding': [4, 8], 'fitting': [16, 16]},
        seed=1,
        deepmd_version='3.2.0',
        level_of_theory_key=level_of_theory_key,
    )
