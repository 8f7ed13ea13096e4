"""Interpreting models and screens: gradient attribution (:mod:`~screening.interpret.attribution`) and
evaluation of a screen's scores against known elements (:mod:`~screening.interpret.evaluate`).
"""
