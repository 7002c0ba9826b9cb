"""Programs that run on the compute side (local or remote); they never import AiiDA."""
