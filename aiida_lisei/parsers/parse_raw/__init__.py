"""Pure text parsers of program outputs (no AiiDA imports): testable without a profile."""
