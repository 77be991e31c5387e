"""The explanation methods: dcsm and the baselines it is compared with."""
