"""ingest: read any source into a manifest; rows that cannot be pairs are rejected."""
