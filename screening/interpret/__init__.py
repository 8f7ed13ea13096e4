"""Interpreting models and screens: gradient attribution (:mod:`~screening.interpret.attribution`), one
work unit of an attribution analysis (:mod:`~screening.interpret.unit`) and evaluation of a screen's
scores against known elements (:mod:`~screening.interpret.evaluate`).
"""
