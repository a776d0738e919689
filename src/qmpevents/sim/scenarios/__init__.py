"""Scenario files shipped with qmpevents, as package data.

Read them with :func:`~qmpevents.sim.scenario.bundled_scenario`.
"""
