"""Audits of finished outputs, which they only read: statistics (``stats``, torch-free), per-group
tables (``tables``), labels stored or probed after the run (``data``), the audit itself
(``runner``), safety policies (``policy``), the HTML report (``report``, ``html``) and their
commands (``commands``). Imports ``core`` and ``probes``, never ``generate`` except to regenerate.
"""
