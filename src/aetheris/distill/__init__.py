"""Three-stage distillation (align, kd, sft): run configs, losses, the top-k teacher cache and
one training loop shared by every stage."""
