"""Hydra config groups (YAML beside this file) and their typed schema (``configs.schema``)."""

from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent)
