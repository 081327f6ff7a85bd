"""Dedupe: exact, perceptual and caption duplicates, merged across shards."""
