"""Training: CLIP fine-tuning and fusion classifiers, the DDP loop, checkpoints, launchers
(torchrun locally, a Kubeflow Trainer v2 TrainJob on a cluster).

Keep this file free of heavy imports: ``pairflow.config`` imports ``train.settings``.
"""
