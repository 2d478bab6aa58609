"""The generation spine, from a prompt row to a committed part: input listing and validation
(``inputs``), the shard plan (``plan``), row -> samples (``samples``, pure), the driver and its
executors (``driver``, ``ray_pool``), one shard end to end (``worker``), diffusion with seeded
latents (``diffusion``, ``seeds``), model presets and loading (``models``, ``presets``) and the part
writer. Imports ``core`` and ``probes``; the plan and inputs import no torch (``sdgen plan``).
"""
