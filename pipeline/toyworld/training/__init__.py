"""How the shipped toy-world models were made (``make toy-models``): deterministic training of the
toy CLIP, the VAE and the UNet on the procedural world, packing into ``../weights``, and the
evaluation that produced ``weights/eval_report.json``. Nothing in the runtime imports this package.
"""
