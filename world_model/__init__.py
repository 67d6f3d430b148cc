"""The learned world simulator, fidelity metrics and the grader. Not built yet."""
