"""structures of aiida-lisei."""
