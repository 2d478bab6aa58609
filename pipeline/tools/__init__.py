"""Helper commands around a run: prompt-template expansion (``expand``), what an output holds
(``status``), regeneration checks (``verify``) and the contact sheet (``contact``).
"""
