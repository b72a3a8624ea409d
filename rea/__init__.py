"""rea: rare event analysis of language models -- the package behind the executable book.

One module per idea: :mod:`rea.models` (loading), :mod:`rea.sampling` (exact-log-prob sampling),
:mod:`rea.observables`, :mod:`rea.toy` and :mod:`rea.exact` (an exactly solvable LM), :mod:`rea.estimators`,
:mod:`rea.tps`, :mod:`rea.diagnostics`, :mod:`rea.lowprob`, :mod:`rea.storage`, :mod:`rea.cli`.
"""

__version__ = "0.1.0"
