"""calculations of aiida-lisei."""
