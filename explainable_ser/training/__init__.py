"""Training: the LightningModule, stages, callbacks, checkpoints, the recipe, run directories."""
