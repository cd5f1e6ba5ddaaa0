"""``adsys benchmark``: every method and the classic baselines on one cohort, under the same
protocols, in one leaderboard.

:mod:`~adsys.benchmark.spec` reads the YAML spec, :mod:`~adsys.benchmark.runner` trains what
is missing, infers and re-scores, :mod:`~adsys.benchmark.leaderboard` ranks and writes the
tables, plots and report, :mod:`~adsys.benchmark.cli` is the command.
"""
