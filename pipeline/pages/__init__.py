"""The HTML pages of sdgen, apart from the numbers they show (pipeline/audit): the audit report
(`report`), the run comparison (`compare`), the labelling sheet (`label_sheet`), their charts
(`charts`) and breakdown sections (`breakdowns`). Jinja templates only (templates/, package data),
autoescaped; numbers print through core.fmt (the `num` and `ci` filters)."""
