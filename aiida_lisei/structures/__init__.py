"""The four atomic models: bulk bcc Li, ordered Li6PS5Cl, the Li/Li6PS5Cl interface, the sandwich.

:mod:`.builders` and :mod:`.parameters` are pure ASE/NumPy; :mod:`.functions` holds the AiiDA
calcfunctions that wrap them (import it explicitly: importing this package imports no AiiDA).
"""
