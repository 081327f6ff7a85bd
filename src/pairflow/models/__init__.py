"""Models shared by every stage and the server: opening any model reference
(:func:`pairflow.models.open.open_model`), the CLIP and trained-artifact formats, exported
variants, embedding and training building blocks. Imports no stage."""
