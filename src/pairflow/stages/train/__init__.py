"""train: CLIP fine-tuning and fusion classifiers under torchrun DDP locally, or a Kubeflow
Trainer v2 TrainJob on a cluster."""
