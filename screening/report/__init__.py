"""After a screen: top hits and pictures read back from the store (:mod:`~screening.report.hits`) and
the plotting helpers (:mod:`~screening.report.plot`).
"""
