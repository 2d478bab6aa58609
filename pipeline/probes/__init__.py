"""What is measured on each image, shared by the run and the audit: the CLIP scorer (``scorer``),
pure probe functions of embeddings (``functions``), per-image probe and safety columns from one
image forward (``image``), and the attribute and safety sets read from YAML (``attributes``,
``safety``). Imports only ``core``.
"""
