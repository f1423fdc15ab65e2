"""The containerised part of the appliance: service specs, the one reconciler, the proxy.

spec.py       a service's resolved container spec and its hash (pure)
plan.py       desired vs actual -> the plan: create, recreate, start, restart, remove,
              networks to make and join (pure)
reconcile.py  observe the engine, apply a plan, the dry run
engine.py     the docker SDK calls, with the hardening every container gets
services.py   the config's services: specs, volumes, secret files, the manifest
proxy.py      nginx in front of the routed services
The steps `services` and `proxy` (and the mail library) describe what should run and
hand it to the reconciler.
"""
