"""The report layer: the card's figures and report.md rendered from a results dict (``results.json``)
and the predictions table alone, and the roadmap/hub tracking blocks. It reads what the experiment
wrote and is called by the CLI; nothing below imports it.
"""
