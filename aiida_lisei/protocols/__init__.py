"""protocols of aiida-lisei."""
