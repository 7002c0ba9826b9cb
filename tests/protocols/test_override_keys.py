"""Protocol overrides are checked against the ports and the protocol's keys: a typo is never dropped."""

from __future__ import annotations

import pytest

from aiida_lisei.workchains.concurrent_learning import ConcurrentLearningWorkChain
from aiida_lisei.workchains.restraint_md import RestraintMdWorkChain


@pytest.mark.parametrize(
    ('overrides', 'key', 'closest'),
    [
        ({'segment_step': 10}, 'segment_step', 'segment_steps'),
        ({'md': {'parameter': {'n_steps': 5}}}, 'md.parameter', 'md.parameters'),
        ({'md': {'metadata': {'options': {'max_wallclock_second': 5}}}}, 'md.metadata.options', 'seconds'),
    ],
)
def test_mistyped_override_is_refused_with_the_closest_key(overrides, key, closest):
    """The message names the key and the closest port or protocol key."""
    with pytest.raises(ValueError, match=key) as info:
        RestraintMdWorkChain.get_protocol_inputs('demo', overrides)
    assert closest in str(info.value)


def test_valid_overrides_pass():
    """Ports, protocol keys (``seed``), Dict contents and a child's ``overrides`` are accepted."""
    inputs = RestraintMdWorkChain.get_protocol_inputs(
        'demo', {'seed': 3, 'restraint': {'d_max': 4.0}, 'md': {'parameters': {'n_steps': 10}}}
    )
    assert inputs['seed'] == 3 and inputs['restraint']['d_max'] == 4.0
    inputs = ConcurrentLearningWorkChain.get_protocol_inputs(
        'demo', {'train': {'overrides': {'dp_train': {'anything': 1}}}, 'label': {'engine': 'cp2k'}}
    )
    assert inputs['label']['engine'] == 'cp2k'
