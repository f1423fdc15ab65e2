"""The appliance's mail server: rendered configs, DKIM, DNS records, the deliverability check.

Pure parts (render, records, dkim, passwords, doctor's findings) are unit-tested;
container.py says what the mail container should be and writes its files; the `mail`
step hands that to the container reconciler. proxy_sites.py: what the proxy serves for
mail, the MTA-STS policies (mta_sts.py) and the mail client settings (autoconfig.py).
"""
