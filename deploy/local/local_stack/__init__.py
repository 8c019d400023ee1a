"""The parts of ``make run``'s launcher (``deploy/local/run.py``): what each service
declares (:mod:`.spec`), and starting, probing and stopping processes (:mod:`.processes`).

Standard library only, as the launcher is.
"""
