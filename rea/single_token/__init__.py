"""Single-token rare outputs (Wu & Hilton): scorers, input distributions, ground truth, estimators, evaluation."""

from rea.single_token.methods import *  # noqa: F401,F403
