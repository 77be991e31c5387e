"""Benchmarks of dcsm against the libraries people use: ``dcsm bench gridpg``.

:mod:`dcsm.bench.photos` (real photos and the model's class for each), :mod:`dcsm.bench.gridpg`
(grids, scoring, the run), :mod:`dcsm.bench.methods` (dcsm, its baselines and the peers: Captum,
pytorch-grad-cam, TorchCAM) and :mod:`dcsm.bench.report` (JSON, markdown table, box plot).
"""
