"""Three-stage distillation: init + align (stage 1), KD (stage 2), SFT (stage 3); run configs,
losses, the top-k teacher cache and one training loop shared by every stage."""
