"""Manifests, readers for every supported source, image decoding, signatures and the
hold-out split."""
