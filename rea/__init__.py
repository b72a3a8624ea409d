"""rea: rare event analysis of language models -- the package behind the executable book.

One module per idea: :mod:`rea.lm.models` (loading), :mod:`rea.sampling` (exact-log-prob sampling),
:mod:`rea.observables`, :mod:`rea.lm.toy` and :mod:`rea.exact` (an exactly solvable LM), :mod:`rea.stats.estimators`,
:mod:`rea.tps`, :mod:`rea.stats.diagnostics`, :mod:`rea.single_token.methods`, :mod:`rea.storage`, :mod:`rea.cli`.
"""

__version__ = "0.1.0"
