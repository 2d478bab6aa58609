"""Audits of finished outputs, which they only read, as numbers: what an audit asks (``spec``),
statistics (``stats``, ``intervals``, ``proportions``; torch-free), per-group tables (``tables``),
labels stored or probed after the run (``data``), calibration and labelling (``calibration``,
``labelling``), diversity (``diversity``), per-prompt breakdowns (``breakdowns``), the audit itself
(``runner``) and its text tables (``text``). Imports ``core``, ``toyworld`` and ``probes``; the HTML
pages that show these numbers are pipeline/pages.
"""
