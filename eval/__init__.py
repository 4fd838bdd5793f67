"""xtrieve.eval: BEIR loading, metrics, ``xtrieve eval`` and ``xtrieve bench`` (with peers).

Modules: :mod:`~xtrieve.eval.beir_data` (load/download BEIR folders, corpus -> docs),
:mod:`~xtrieve.eval.metrics` (beir's EvaluateRetrieval, TREC runs, latency summaries),
:mod:`~xtrieve.eval.evaluate` (the eval pipeline), :mod:`~xtrieve.eval.bench` (the
benchmark) and :mod:`~xtrieve.eval.peers` (fast-plaid, xtr-warp-rs, PyLate adapters).
Nothing here prints (but ``pooling_table``'s ``python -m`` entry point, which echoes its
table): progress goes through tqdm, messages through logging.
"""
