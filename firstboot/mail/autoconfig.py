"""Mail client autoconfiguration: what a mail client is told when it is given only an
address, and reading it back (for `check mail`). Pure: no I/O.

* Thunderbird (and the clients that read its format) fetches
  https://autoconfig.DOMAIN/mail/config-v1.1.xml, then
  https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml: the mail host, IMAPS and both
  submission ports, the login being the whole address (%EMAILADDRESS%).
* Outlook POSTs a request naming the address (<EMailAddress>) to
  https://autodiscover.DOMAIN/autodiscover/autodiscover.xml and takes a "plain old XML"
  answer (Exchange's 2006 autodiscover schemas) naming the same servers, with that address
  as <LoginName>.

The ports are the ones the mail container serves (firstboot/mail/render.py); the proxy
serves the documents (firstboot/mail/proxy_sites.py makes its sites).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from firstboot.mail.render import IMAPS_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT

AUTOCONFIG_PATH = "/mail/config-v1.1.xml"
WELL_KNOWN_AUTOCONFIG_PATH = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
THUNDERBIRD_LOGIN = "%EMAILADDRESS%"  # Thunderbird puts the address the user typed here
SSL = "SSL"  # TLS from the first byte (Thunderbird's socketType)
STARTTLS = "STARTTLS"  # plain first, TLS required before the login
# Outlook's <Encryption> for each: it overrides <SSL>, which cannot say STARTTLS.
OUTLOOK_ENCRYPTION = {SSL: "SSL", STARTTLS: "TLS"}
# An address the answer may echo (no markup can hide in it); the proxy's nginx picks the
# requested one out of the request with it.
ADDRESS_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+"
MAX_DOCUMENT = 64 * 1024  # bytes; the real ones are about 1.5 KiB


@dataclass(frozen=True, order=True)
class ClientServer:
    """One server a mail client is told to use."""

    protocol: str  # imap | smtp
    hostname: str
    port: int
    security: str  # SSL | STARTTLS

    def describe(self) -> str:
        return f"{self.protocol.upper()} {self.hostname}:{self.port} {self.security}"


def client_servers(hostname: str) -> tuple[ClientServer, ...]:
    """IMAPS, then submission with TLS from the start (preferred), then with STARTTLS."""
    return (ClientServer("imap", hostname, IMAPS_PORT, SSL),
            ClientServer("smtp", hostname, SUBMISSIONS_PORT, SSL),
            ClientServer("smtp", hostname, SUBMISSION_PORT, STARTTLS))


# ---------------------------------------------------------------- Thunderbird


def thunderbird_config(hostname: str, domain: str) -> str:
    """config-v1.1.xml for the mail domain: its servers, the login is the whole address."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<clientConfig version="1.1">',
             f"  <emailProvider id={quoteattr(domain)}>",
             f"    <domain>{escape(domain)}</domain>",
             f"    <displayName>Mail of {escape(domain)}</displayName>",
             f"    <displayShortName>{escape(domain)}</displayShortName>"]
    for server in client_servers(hostname):
        element = "incomingServer" if server.protocol == "imap" else "outgoingServer"
        lines += [f"    <{element} type={quoteattr(server.protocol)}>",
                  f"      <hostname>{escape(server.hostname)}</hostname>",
                  f"      <port>{server.port}</port>",
                  f"      <socketType>{server.security}</socketType>",
                  # Over TLS only (both ports refuse a login before it): PLAIN or LOGIN.
                  "      <authentication>password-cleartext</authentication>",
                  f"      <username>{THUNDERBIRD_LOGIN}</username>",
                  f"    </{element}>"]
    return "\n".join([*lines, "  </emailProvider>", "</clientConfig>", ""])


# ---------------------------------------------------------------- Outlook


def outlook_answer_parts(hostname: str) -> tuple[str, ...]:
    """Outlook's answer, cut where each protocol's <LoginName> goes: whoever serves it
    puts the requested address there (`outlook_answer` here; nginx for the world)."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n'
             f'<Autodiscover xmlns="{RESPONSE_NS}">\n'
             f'  <Response xmlns="{OUTLOOK_NS}">\n'
             "    <Account>\n"
             "      <AccountType>email</AccountType>\n"
             "      <Action>settings</Action>\n"]
    for server in client_servers(hostname):
        parts[-1] += ("      <Protocol>\n"
                      f"        <Type>{server.protocol.upper()}</Type>\n"
                      f"        <Server>{escape(server.hostname)}</Server>\n"
                      f"        <Port>{server.port}</Port>")
        extra = "" if server.protocol == "imap" else \
            "        <UsePOPAuth>off</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>\n"
        parts.append("\n"
                     "        <DomainRequired>off</DomainRequired>\n"
                     "        <SPA>off</SPA>\n"
                     "        <SSL>on</SSL>\n"
                     f"        <Encryption>{OUTLOOK_ENCRYPTION[server.security]}</Encryption>\n"
                     "        <AuthRequired>on</AuthRequired>\n"
                     f"{extra}"
                     "      </Protocol>\n")
    parts[-1] += "    </Account>\n  </Response>\n</Autodiscover>\n"
    return tuple(parts)


def outlook_answer(hostname: str, address: str | None) -> str:
    """The answer to a request for `address` (None: a request that named none)."""
    login = f"<LoginName>{escape(address)}</LoginName>" if address else ""
    return login.join(outlook_answer_parts(hostname))


def outlook_request(address: str) -> bytes:
    """What Outlook POSTs: the address, and the answer schema it takes."""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{REQUEST_NS}">\n'
            f"  <Request>\n    <EMailAddress>{escape(address)}</EMailAddress>\n"
            f"    <AcceptableResponseSchema>{OUTLOOK_NS}</AcceptableResponseSchema>\n"
            "  </Request>\n</Autodiscover>\n").encode()


# ---------------------------------------------------------------- reading them back


class NotAClientConfig(ValueError):
    """The document is not the kind of client configuration it was fetched as."""


def parse(text: str) -> ElementTree.Element:
    """A fetched document as XML. No DTD: nothing to expand (the clients load none either)."""
    if len(text) > MAX_DOCUMENT:
        raise NotAClientConfig(f"{len(text)} characters, more than a client configuration")
    if "<!DOCTYPE" in text.upper():
        raise NotAClientConfig("it declares a DTD")
    try:
        # Our own proxy's answer, small, without a DTD: expat expands no external entity.
        return ElementTree.fromstring(text)  # noqa: S314
    except ElementTree.ParseError as e:
        raise NotAClientConfig(f"not well-formed XML: {e}") from e


def read_thunderbird(text: str) -> tuple[list[str], list[ClientServer], set[str]]:
    """(domains, servers, usernames) a config-v1.1.xml names."""
    root = parse(text)
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        raise NotAClientConfig(f"<{root.tag}> is not a clientConfig with an emailProvider")
    servers = []
    for element in provider:
        if element.tag in ("incomingServer", "outgoingServer"):
            servers.append(ClientServer(element.get("type", ""),
                                        (element.findtext("hostname") or "").lower(),
                                        _port(element.findtext("port")),
                                        element.findtext("socketType") or ""))
    usernames = {e.text or "" for e in provider.iter("username")}
    return [d.text or "" for d in provider.findall("domain")], servers, usernames


def read_outlook(text: str) -> tuple[list[ClientServer], set[str]]:
    """(servers, login names) an autodiscover answer names; its namespaces must be right."""
    root = parse(text)
    account = root.find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    if root.tag != f"{{{RESPONSE_NS}}}Autodiscover" or account is None:
        raise NotAClientConfig(f"{root.tag} is not an autodiscover answer with an Account "
                               "(in Exchange's 2006 response namespaces)")
    servers, logins = [], set()
    for protocol in account.iterfind(f"{{{OUTLOOK_NS}}}Protocol"):
        encryption = _field(protocol, "Encryption") or \
            ("SSL" if _field(protocol, "SSL") != "off" else "None")
        security = {v: k for k, v in OUTLOOK_ENCRYPTION.items()}.get(encryption, encryption)
        servers.append(ClientServer(_field(protocol, "Type").lower(),
                                    _field(protocol, "Server").lower(),
                                    _port(_field(protocol, "Port")), security))
        logins.add(_field(protocol, "LoginName"))
    return servers, logins


def server_problems(found: list[ClientServer], hostname: str) -> list[str]:
    """What is wrong with the servers a document names, compared with what the box serves."""
    wanted = client_servers(hostname.lower())
    missing = [s.describe() for s in wanted if s not in found]
    foreign = [s.describe() for s in found if s not in wanted]
    return ([f"does not name {', '.join(missing)}"] if missing else []) + \
        ([f"names {', '.join(foreign)}, which this box does not serve"] if foreign else [])


def _field(protocol: ElementTree.Element, name: str) -> str:
    return (protocol.findtext(f"{{{OUTLOOK_NS}}}{name}") or "").strip()


def _port(text: str | None) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return 0
