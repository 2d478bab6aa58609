"""The contracts every stage shares, with no torch: the job config and its resolution into one
``ResolvedJob``, the output schema, the output layout with its single commit path (``Output``), and
the read side of finished datasets (``Dataset``). Everything else in sdgen may import ``core``;
``core`` imports nothing else of sdgen.
"""
