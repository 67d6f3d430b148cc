"""MuJoCo tasks through gymnasium (Reacher, InvertedPendulum, HalfCheetah)."""
