"""The states of a screen run by the service, defined once (the job actors, the API, the client, the CLI).

A screen is ``validating`` (inputs being checked), ``running``, ``cancelling``, then ends
``completed``, ``failed``, ``cancelled`` or ``interrupted`` (its driver died with the server);
the last three can be resumed. Light: no Ray, no FastAPI, so the client imports it.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ACTIVE", "RESUMABLE", "STATES", "TERMINAL", "JobState"]

JobState = Literal["validating", "running", "cancelling", "completed", "failed", "cancelled", "interrupted"]

#: Every state, in lifecycle order.
STATES: tuple[str, ...] = get_args(JobState)
#: States of a screen that holds (or is about to hold) its store.
ACTIVE: tuple[str, ...] = ("validating", "running", "cancelling")
#: States a screen ends in.
TERMINAL: tuple[str, ...] = ("completed", "failed", "cancelled", "interrupted")
#: Terminal states a screen can be resumed from.
RESUMABLE: tuple[str, ...] = ("failed", "cancelled", "interrupted")
