"""AiiDA data plugins of aiida-lisei."""
