"""The multi-seed method comparison: statistics, tables, conclusion and figures.

This answers the project's question - does Latent-Mixup make classifiers more robust than
the alternatives, and at what cost? - from per-seed metric dicts alone, so all of it is
testable without training (`experiments/compare.py` runs the members and calls
`write_comparison_report`). Per method and metric: mean and 95% Student-t CI over seeds
(n-1 dof; "n/a" with one seed) and a paired t-test of the per-seed differences against
the reference method (ERM). The conclusion is worded only as strongly as that test allows.

`runs` everywhere is {method: {seed: metrics}}, metrics being the flat dicts of
`latmix_tf.runner.train_and_evaluate` ("test/accuracy", "blur/acc@1.0", "pgd/acc@0.1", ...).

  metrics.py   which metrics, their labels, units and better direction
  protocol.py  the declared statistics protocol: primary family, Holm per family, TOST margins
  summary.py   per (method, metric) rows: mean, CI, paired test; the conclusion sentences
  diagnostics.py  gradient-masking flags per member; corruptions where a model collapses
  figures.py   blur / attack curves with CI bands, ρ_adv bars, accuracy-vs-robustness
  report.py    results.csv, results.json, report.md
  costs.py     what each member cost (wall / CPU seconds, CPU model), from its stage records
  publish.py   the summary copied into the repository's results/ folder
  executors.py where members run: one after another here, or as Ray tasks (docs/scaling.md)
"""

from latmix_tf.comparison.metrics import (METHOD_LABELS, headline_metrics, label, metric_label,
                                          report_metrics)
from latmix_tf.comparison.publish import publish_summary
from latmix_tf.comparison.report import CSV_FIELDS, write_comparison_report
from latmix_tf.comparison.summary import conclusions, summarize
