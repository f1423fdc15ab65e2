"""The containerised part of the appliance: service specs, reconcile plans, the proxy.

The first-boot steps `services`, `proxy` and `health` (firstboot/steps/) are thin
drivers over these modules: pure functions turn the config into specs and plans,
and `engine` applies them through the docker SDK.
"""
