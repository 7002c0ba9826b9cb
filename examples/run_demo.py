"""The study at demo size: ``verdi -p lisei-demo run examples/run_demo.py``.

Step 1 of the roadmap: build the four atomic models (bcc Li, ordered Li6PS5Cl, the
Li/Li6PS5Cl interface and the Li|Li6PS5Cl|Li sandwich) through provenance-tracked
calcfunctions, once at the paper's size and once at demo size, and print a summary with
the PKs to inspect. Caching makes a second run reuse every node.
"""

from __future__ import annotations

import argparse

from aiida.engine import run_get_node
from aiida.manage import get_manager
from aiida.manage.caching import enable_caching

from aiida_lisei.reporting import format_models_summary, format_paper_comparison
from aiida_lisei.workchains.atomic_models import AtomicModelsWorkChain


def build_models(protocol: str):
    """Run ``lisei.atomic_models`` with ``protocol`` (cached) and return its node."""
    builder = AtomicModelsWorkChain.get_builder_from_protocol(protocol=protocol)
    with enable_caching(identifier='aiida.calculations:lisei.*'):
        _, node = run_get_node(builder)
    cached = sum(1 for called in node.called if called.base.caching.is_created_from_cache)
    print(f'lisei.atomic_models ({protocol}): {len(node.called)} calcfunctions, {cached} from the cache')
    if not node.is_finished_ok:
        raise SystemExit(f'lisei.atomic_models ({protocol}) failed: verdi process report {node.pk}')
    return node


def main() -> None:
    """Run the demo and print what it made."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--protocol', default='demo', choices=['demo', 'paper'])
    args = parser.parse_args()

    paper = build_models('paper')
    print(format_models_summary(paper, title="Atomic models at the paper's size (protocol `paper`)"))
    print(format_paper_comparison(paper.outputs.summary.get_dict()))
    if args.protocol != 'paper':
        demo = build_models(args.protocol)
        print(
            format_models_summary(demo, title=f'Atomic models for the demo runs (protocol `{args.protocol}`)')
        )
    profile = get_manager().get_profile().name
    print(f'Inspect: verdi -p {profile} process show <PK>  |  verdi -p {profile} node show <PK>')


if __name__ == '__main__':
    main()
