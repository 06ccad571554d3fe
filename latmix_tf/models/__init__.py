"""Model families, one per file: classifiers, DCGAN, VAE and the inversion encoder."""
