"""Model-side building blocks: teacher loading, batched generation and supervised fine-tuning.

Kept apart from the rest of ``distillery`` so that services which only move messages never import
torch or transformers.
"""
