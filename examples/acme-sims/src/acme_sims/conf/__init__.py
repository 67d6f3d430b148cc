"""The plug-in's Hydra configs: ``flywheel run hydra.searchpath=[pkg://acme_sims.conf] sim=acme_slider``."""
