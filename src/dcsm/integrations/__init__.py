"""Bridges between dcsm and other toolkits.

Each bridge imports its toolkit only when it is used, so none of them is a dependency of dcsm:

* :mod:`dcsm.integrations.quantus`: Quantus (the XAI evaluation toolkit) as an outside judge
  of dcsm's maps and of its peers' (``pip install 'distinct-saliency[quantus]'``).
"""
