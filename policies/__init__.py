"""The agent: one Mixture-of-Transformers model that perceives, imagines and acts.

Read in this order: ``config`` (sizes as data), ``layout`` (segments and the attention
mask), ``mot`` (the backbone), ``tokenizers`` (one per modality), ``flow`` (rectified
flow), ``model`` (tokenizers + backbone + heads), ``agent`` (Perceive -> Imagine -> Act,
planning), ``routes`` (one model, many problems), ``checkpoint``. ``docs/policies.md``
explains the design.
"""

from policies.agent import Agent, Context, Imagined, Plan
from policies.config import SIZES, ModelConfig, model_config
from policies.data import Data
from policies.model import Item, Model
from policies.routes import ROUTES, generate, route_loss, route_table
from policies.tokenizers import register_tokenizer

__all__ = ["Agent", "Context", "Data", "Imagined", "Item", "Model", "ModelConfig", "Plan", "ROUTES", "SIZES",
           "generate", "model_config", "register_tokenizer", "route_loss", "route_table"]
