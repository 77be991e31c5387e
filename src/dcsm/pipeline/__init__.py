"""The method, stage by stage, in the paper's order.

* :mod:`dcsm.pipeline.adapters`: model adapters (a classifier, its layers and preprocessing).
* :mod:`dcsm.pipeline.rules`: back-propagation rules (guided, plain).
* :mod:`dcsm.pipeline.images`: images to tensors at the working resolution and the scales.
* :mod:`dcsm.pipeline.gradients`: one forward pass, the class score maps back-propagated together.
* :mod:`dcsm.pipeline.layer_maps`: per-layer maps (Eq. 1, max over channels, upsampled).
* :mod:`dcsm.pipeline.contrast`: the class contrast (Eq. 2).
* :mod:`dcsm.pipeline.fusion`: the multi-scale, multi-layer fusion (Eq. 3).
* :mod:`dcsm.pipeline.affinity`: the optional random walk on the model's feature affinities.
* :mod:`dcsm.pipeline.candidates`: the candidate classes; :mod:`dcsm.pipeline.presets`: named
  settings; :mod:`dcsm.pipeline.explainer`: the whole method (:class:`DistinctSaliency`).
* :mod:`dcsm.pipeline.speedups`: optimisations that leave the numbers unchanged.
"""
