"""Small shared utilities: logging, atomic file writes, image I/O."""
