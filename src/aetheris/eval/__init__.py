"""Evaluation: multilingual tasks, a batched HF scorer, and a resumable runner."""
