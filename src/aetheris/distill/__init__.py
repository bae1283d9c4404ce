"""The three-stage distillation: init/align (stage 1), KD (stage 2), SFT (stage 3)."""
