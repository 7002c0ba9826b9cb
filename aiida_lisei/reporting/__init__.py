"""Reporting for people: the paper's numbers (:mod:`.paper`, their one source), our numbers beside them
(:mod:`.comparisons`), text tables (:mod:`.tables`) and figures (:mod:`.plots`).

Pure: no AiiDA imports. The work chains call it through calcfunctions, so comparisons and figures are
nodes in the provenance graph.
"""
