"""cli of aiida-lisei."""
