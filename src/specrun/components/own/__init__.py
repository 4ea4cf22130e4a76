"""The user's own code at run time: import it, adapt it to the engine's interfaces.

``specrun.spec.owncode`` reads the code statically for ``validate``; this
package imports and calls it. One module per kind: ``data`` (a map-style or
iterable Dataset behind a seeded, resumable sampler), ``model`` (an nn.Module
whose forward takes the batch's tensors), ``loss``, ``metrics``, ``optim``;
``loader`` imports and reports failures with the user's frames only.
"""
