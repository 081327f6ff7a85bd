"""The demo (``pairflow demo``): the synthetic data generator, the tiny reference CLIP
pretrained on it, and the monitor round that replays traffic. Off every production path."""
