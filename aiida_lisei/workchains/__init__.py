"""workchains of aiida-lisei."""
