"""Models: the Refiner-ViT variants as data, the PyTorch model, official checkpoints, and create_model."""
