"""clip_filter: score each pair by CLIP image-text cosine and keep the agreeing ones
(threshold, top fraction or per-source rules); embeddings, histogram and summary."""
