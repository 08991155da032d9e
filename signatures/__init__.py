"""Rubrics as typed DSPy signatures.

Shipped rubrics live here as TOML files (``ml_notebook``, ``code_usefulness``); a user's rubric
file (TOML or YAML) goes through the same builder, so both give the same signature classes.
"""

from judgealign.signatures.rubric import (
    NA,
    DimensionSpec,
    InputSpec,
    Rubric,
    build_signature,
    builtin_rubrics,
    load_builtin,
    load_rubric_file,
    parse_score,
    resolve_rubric,
    rubric_from_dict,
)

__all__ = ["NA", "DimensionSpec", "InputSpec", "Rubric", "build_signature", "builtin_rubrics",
           "load_builtin", "load_rubric_file", "parse_score", "resolve_rubric",
           "rubric_from_dict"]
