"""The screening service: a Ray Serve application (FastAPI ingress) that runs screens as Ray work.

* :mod:`screening.service.app` — ``build_app(args)``, the Serve application builder.
* :mod:`screening.service.api` — the FastAPI routes (auth, limits, submit/status/cancel/resume/query/export).
* :mod:`screening.service.jobs` — detached Ray actors: the job registry and one driver per screen.
* :mod:`screening.service.policy` — where stores may live and which input paths a spec may name.
* :mod:`screening.service.config` — the service settings (and the roots the policy compares against).
* :mod:`screening.service.states` — a screen's job states, defined once (shared with the client).
* :mod:`screening.service.wire` — query results on the wire (JSON, Arrow IPC), shared with the client.

Nothing here imports Ray at import time, so the client and the CLI stay light. The CLI verbs that talk to
the service are in :mod:`screening.cli.remote`.
"""
