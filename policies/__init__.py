"""The agent: the Mixture-of-Transformers backbone, tokenizers, Perceive/Imagine/Act. Not built yet."""
