"""parsers of aiida-lisei."""
