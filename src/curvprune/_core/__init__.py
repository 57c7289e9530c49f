"""Plumbing shared by every layer: parameter dicts, batches, model state, memory, ranks.

Nothing here knows about criteria, pruning or experiments; every other folder may import it.
"""
