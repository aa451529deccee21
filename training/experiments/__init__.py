"""The paper's experiment harness, on top of the library: consumers, the reproduction, its report.

Everything here *uses* the embedding team's library (``training.data``, ``training.strategies``,
``training.chain`` ...) the way an evaluation would; nothing in the library imports from here.

* :mod:`training.experiments.consumers` -- the consumer teams: the five unintended tasks, the
  paper's MLP and its protocol, and reading version-0 vectors through Feast;
* :mod:`training.experiments.reproduce` -- ``python -m training reproduce``: every strategy x version,
  consumers on every task, ``results.json``;
* :mod:`training.experiments.report` (the results' schema), :mod:`training.experiments.report_aggregate`
  (the paper's aggregation), :mod:`training.experiments.report_markdown` and
  :mod:`training.experiments.plots` -- the Markdown report and the PNG plots;
* :mod:`training.experiments.demo` -- ``python -m training demo``: the main job (its report, bar and
  plot: ``demo_report``; its command line: ``demo_cli``; the reproduction's: ``reproduce_cli``).
"""
