"""The appliance's mail server: rendered configs, DKIM, DNS records, the deliverability check.

Pure parts (render, records, dkim, passwords, doctor's findings) are unit-tested;
the `mail` step (firstboot/steps/mail.py) writes the files and runs the container.
"""
