"""Mail client autoconfiguration (pure): Thunderbird's config-v1.1.xml, Outlook's POX
autodiscover answer, the sites the proxy serves them from, and reading them back."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from firstboot.containers.nginx import (
    AUTODISCOVER_ANSWER,
    AUTODISCOVER_LOGIN,
    MailSites,
    StatusPageSite,
    render_proxy_config,
    sites_from_routes,
)
from firstboot.containers.spec import RouteSpec
from firstboot.core.config import Appliance, load_config
from firstboot.mail.autoconfig import (
    ADDRESS_PATTERN,
    OUTLOOK_NS,
    REQUEST_NS,
    RESPONSE_NS,
    SSL,
    STARTTLS,
    ClientServer,
    NotAClientConfig,
    client_servers,
    outlook_answer,
    outlook_request,
    read_outlook,
    read_thunderbird,
    server_problems,
    thunderbird_config,
)
from firstboot.mail.container import MAIL_PORTS
from firstboot.mail.proxy_sites import mail_sites
from firstboot.mail.render import IMAPS_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT

ROOT = Path(__file__).resolve().parents[2]
HOST = "mail.arkbox.test"
ADDRESS = "admin@arkbox.test"
NS = f"{{{OUTLOOK_NS}}}"  # ElementTree's spelling of a name in Outlook's namespace


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(ROOT / "config/default.yaml")


def with_mail(config: Appliance, **changes: object) -> Appliance:
    return config.model_copy(update={"mail": config.mail.model_copy(update=changes)})


# ---------------------------------------------------------------- what clients are told


def test_clients_are_told_the_ports_the_mail_container_serves() -> None:
    servers = client_servers(HOST)
    assert [(s.protocol, s.hostname, s.port, s.security) for s in servers] == [
        ("imap", HOST, 993, SSL), ("smtp", HOST, 465, SSL), ("smtp", HOST, 587, STARTTLS)]
    assert (IMAPS_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT) == (993, 465, 587)
    assert {s.port for s in servers} <= set(MAIL_PORTS)


def test_thunderbird_config_names_the_mail_host_ports_and_socket_types() -> None:
    root = ElementTree.fromstring(thunderbird_config(HOST, "arkbox.test"))
    assert (root.tag, root.get("version")) == ("clientConfig", "1.1")
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "arkbox.test"
    assert [d.text for d in provider.findall("domain")] == ["arkbox.test"]
    incoming = [(e.get("type"), e.findtext("hostname"), e.findtext("port"),
                 e.findtext("socketType")) for e in provider.findall("incomingServer")]
    outgoing = [(e.get("type"), e.findtext("hostname"), e.findtext("port"),
                 e.findtext("socketType")) for e in provider.findall("outgoingServer")]
    assert incoming == [("imap", HOST, "993", "SSL")]
    assert outgoing == [("smtp", HOST, "465", "SSL"), ("smtp", HOST, "587", "STARTTLS")]
    # The login is the whole address; the password goes only over TLS.
    assert {e.text for e in provider.iter("username")} == {"%EMAILADDRESS%"}
    assert {e.text for e in provider.iter("authentication")} == {"password-cleartext"}


def outlook_protocols(text: str) -> list[dict[str, str]]:
    root = ElementTree.fromstring(text)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{NS}Response/{NS}Account")
    assert account is not None
    assert account.findtext(f"{NS}AccountType") == "email"
    assert account.findtext(f"{NS}Action") == "settings"
    return [{child.tag.removeprefix(NS): child.text or "" for child in protocol}
            for protocol in account.findall(f"{NS}Protocol")]


def test_outlook_answer_is_well_formed_in_exchanges_namespaces_with_the_login() -> None:
    protocols = outlook_protocols(outlook_answer(HOST, ADDRESS))
    assert [(p["Type"], p["Server"], p["Port"], p["SSL"], p["Encryption"]) for p in protocols] == [
        ("IMAP", HOST, "993", "on", "SSL"), ("SMTP", HOST, "465", "on", "SSL"),
        ("SMTP", HOST, "587", "on", "TLS")]
    assert all(p["LoginName"] == ADDRESS for p in protocols)
    assert all((p["AuthRequired"], p["SPA"], p["DomainRequired"]) == ("on", "off", "off")
               for p in protocols)


def test_outlook_answer_without_an_address_has_no_login_and_escapes_one() -> None:
    assert all("LoginName" not in p for p in outlook_protocols(outlook_answer(HOST, None)))
    protocols = outlook_protocols(outlook_answer(HOST, "a&b<c@arkbox.test"))
    assert {p["LoginName"] for p in protocols} == {"a&b<c@arkbox.test"}


def test_outlook_request_is_what_outlook_posts() -> None:
    root = ElementTree.fromstring(outlook_request(ADDRESS))
    assert root.tag == f"{{{REQUEST_NS}}}Autodiscover"
    r = f"{{{REQUEST_NS}}}"
    assert root.findtext(f"{r}Request/{r}EMailAddress") == ADDRESS
    assert root.findtext(f"{r}Request/{r}AcceptableResponseSchema") == OUTLOOK_NS


# ---------------------------------------------------------------- reading them back


def test_documents_read_back_as_the_servers_they_were_made_from() -> None:
    domains, servers, usernames = read_thunderbird(thunderbird_config(HOST, "arkbox.test"))
    assert (domains, usernames) == (["arkbox.test"], {"%EMAILADDRESS%"})
    assert servers == list(client_servers(HOST)) and server_problems(servers, HOST) == []
    servers, logins = read_outlook(outlook_answer(HOST, ADDRESS))
    assert servers == list(client_servers(HOST)) and logins == {ADDRESS}


def test_server_problems_name_what_is_missing_and_what_is_foreign() -> None:
    wrong = [ClientServer("imap", HOST, 143, STARTTLS), *client_servers(HOST)[1:]]
    assert server_problems(wrong, HOST) == [
        f"does not name IMAP {HOST}:993 SSL",
        f"names IMAP {HOST}:143 STARTTLS, which this box does not serve"]
    other = [ClientServer(s.protocol, "mx.elsewhere.test", s.port, s.security)
             for s in client_servers(HOST)]
    assert server_problems(other, HOST)[0].startswith("does not name IMAP mail.arkbox.test")


@pytest.mark.parametrize(("text", "says"), [
    ("<html>not found</html>", "is not a clientConfig"),
    ("<clientConfig", "not well-formed XML"),
    ('<!DOCTYPE x [<!ENTITY a "b">]><clientConfig/>', "declares a DTD"),
    ("<x>" + "y" * 70000 + "</x>", "more than a client configuration"),
])
def test_what_is_not_a_client_config_is_said(text: str, says: str) -> None:
    with pytest.raises(NotAClientConfig, match=says):
        read_thunderbird(text)


def test_an_answer_in_the_wrong_namespace_is_not_outlooks() -> None:
    wrong = outlook_answer(HOST, ADDRESS).replace(OUTLOOK_NS, "urn:other")
    with pytest.raises(NotAClientConfig, match="not an autodiscover answer"):
        read_outlook(wrong)


# ---------------------------------------------------------------- the proxy's sites


def test_each_mail_domain_gets_both_sites_and_mail_off_gets_none(config: Appliance) -> None:
    sites = mail_sites(config, None)
    assert [(s.hostname, s.domain, s.path) for s in sites.autoconfig] == [
        ("autoconfig.arkbox.test", "arkbox.test", "/mail/config-v1.1.xml")]
    assert sites.autoconfig[0].config_xml == thunderbird_config(HOST, "arkbox.test")
    assert sites.autodiscover is not None
    assert sites.autodiscover.hostnames == ("autodiscover.arkbox.test",)
    two = mail_sites(with_mail(config, domains=["arkbox.test", "b.example"]), None)
    assert [s.hostname for s in two.autoconfig] == ["autoconfig.arkbox.test",
                                                   "autoconfig.b.example"]
    assert two.autodiscover is not None
    assert two.autodiscover.hostnames == ("autodiscover.arkbox.test", "autodiscover.b.example")
    assert mail_sites(with_mail(config, enabled=False), None) == MailSites()


def rendered(config: Appliance, **kwargs: object) -> str:
    routes = [(name, RouteSpec(s.route.hostname, s.route.path, s.route.port,
                               s.route.max_body_size))
              for name, s in sorted(config.services.items()) if s.route]
    return render_proxy_config(sites_from_routes(routes), ocsp_stapling=False,
                               mail=mail_sites(config, None), **kwargs)


def server_block(text: str, name: str) -> str:
    start = text.index(f"server_name {name};")
    return text[start:text.index("\n}\n", start)]


def nginx_string(token: str) -> str:
    """What nginx makes of a double-quoted string (its escapes: \\\\ \\" \\n)."""
    assert token.startswith('"') and token.endswith('"'), token
    return re.sub(r'\\(["\\n])', lambda m: "\n" if m[1] == "n" else m[1], token[1:-1])


def returned(block: str, location: str) -> str:
    start = block.index(f"location {location} ")
    line = next(line for line in block[start:].splitlines() if "return 200 " in line)
    return nginx_string(line.strip().removeprefix("return 200 ").removesuffix(";"))


def test_autoconfig_server_returns_the_file_and_nothing_else(config: Appliance) -> None:
    block = server_block(rendered(config), "autoconfig.arkbox.test")
    assert returned(block, "= /mail/config-v1.1.xml") == thunderbird_config(HOST, "arkbox.test")
    assert "location / {\n        return 404;" in block
    assert "ssl_certificate /etc/nginx/tls/fullchain.pem;" in block


def test_the_well_known_file_is_on_the_mail_domains_own_server(config: Appliance) -> None:
    # arkbox.test is the appliance's name (the status page) and the mail domain.
    text = rendered(config, status_page=StatusPageSite("arkbox.test"))
    path = "= /.well-known/autoconfig/mail/config-v1.1.xml"
    block = server_block(text, "arkbox.test")
    assert returned(block, path) == thunderbird_config(HOST, "arkbox.test")
    assert block.index(path) < block.index("location / {")
    assert path not in server_block(text, "wiki.arkbox.test")
    # A route on the mail domain gets it too; without mail, nobody does.
    routed = config.model_copy(update={"services": {
        name: s.model_copy(update={"route": s.route.model_copy(update={"hostname":
                                                                        "arkbox.test"})})
        if name == "wiki" and s.route else s for name, s in config.services.items()}})
    assert returned(server_block(rendered(routed), "arkbox.test"), path) == \
        thunderbird_config(HOST, "arkbox.test")
    assert ".well-known/autoconfig" not in rendered(with_mail(config, enabled=False),
                                                    status_page=StatusPageSite("arkbox.test"))


def test_autodiscover_answers_from_the_loopback_with_the_requested_login(
        config: Appliance) -> None:
    text = rendered(config)
    block = server_block(text, "autodiscover.arkbox.test")
    assert 'location ~* "^/autodiscover/autodiscover\\\\.xml$" {' in block
    assert f"proxy_pass http://{AUTODISCOVER_ANSWER};" in block
    # The client's own headers never reach the answer: only the address nginx read.
    assert "proxy_pass_request_headers off;" in block
    assert "X-Arkbox-Autodiscover-Address $arkbox_autodiscover_address;" in block
    assert "limit_except GET POST {" in block
    inner = text[text.index(f"listen {AUTODISCOVER_ANSWER};"):]
    answer = returned(inner, "/")
    login = f"<LoginName>{ADDRESS}</LoginName>"
    assert answer.replace("${" + AUTODISCOVER_LOGIN + "}", login) == outlook_answer(HOST, ADDRESS)
    assert answer.replace("${" + AUTODISCOVER_LOGIN + "}", "") == outlook_answer(HOST, None)


def map_regex(text: str, variable: str) -> re.Pattern[str]:
    """The regex of the map that sets `variable`, as Python's re reads it."""
    block = text[text.index(f" ${variable} {{"):]
    line = next(line for line in block.splitlines() if line.strip().startswith('"~'))
    pattern = nginx_string(line.split('" ', 1)[0].strip() + '"').removeprefix("~")
    return re.compile(pattern.replace("(?<", "(?P<"))


def test_the_maps_pick_the_address_out_of_outlooks_request_and_nothing_else(
        config: Appliance) -> None:
    text = rendered(config)
    body = map_regex(text, "arkbox_autodiscover_address")
    found = body.search(outlook_request(ADDRESS).decode())
    assert found is not None and found["arkbox_address"] == ADDRESS
    assert body.search("<Request><EMailAddress>a</x><y>@b</EMailAddress>") is None
    header = map_regex(text, AUTODISCOVER_LOGIN)
    assert header.fullmatch(ADDRESS)
    assert header.search("a@b</LoginName><Evil/>") is None
    assert ADDRESS_PATTERN in body.pattern and ADDRESS_PATTERN in header.pattern
    assert '"<LoginName>$arkbox_login</LoginName>";' in text


def test_without_mail_nothing_of_it_is_rendered(config: Appliance) -> None:
    text = rendered(with_mail(config, enabled=False))
    for absent in ("autoconfig.", "autodiscover.", "$request_body", AUTODISCOVER_ANSWER,
                   "mta-sts."):
        assert absent not in text
