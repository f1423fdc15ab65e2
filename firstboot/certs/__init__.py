"""Certificates from an ACME CA: issuance, renewal, and what status says about them.

`acme_client` speaks to the CA (through the `acme` library), `renew` decides when
and installs what it brought, `cli` is `arkbox-installer renew`.
"""
