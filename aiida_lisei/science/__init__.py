"""Pure numerics of the study (no AiiDA imports): Ewald, QEq, CVs, clusters, RDF, SEI."""
