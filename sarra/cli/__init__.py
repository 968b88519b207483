"""sarra.cli: the one command-line front end of every sr_* component.

Modules: ``main`` (entry points, dispatch, the daemon instance body), ``verbs`` (the actions),
``instances`` (pid files, liveness, spawn and stop), ``logs`` (per-instance rotating logs,
secret masking), ``configs`` (config files: list/add/remove/enable/disable), ``signals``,
``runtime`` (the collaborators, injectable for tests) and ``testing`` (doubles).
"""
