"""DMARC (RFC 7489) with the `dmarc` library: the record of the From: domain, else of its
organizational domain (public suffix list from publicsuffix2, shipped in the wheel, never
fetched), then identifier alignment of the SPF and DKIM results that passed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dmarc
from publicsuffix2 import PublicSuffixList

from mailyard.smtp_ingress.authdns import AuthDns, TempError
from mailyard.smtp_ingress.dkim_verify import DkimResult
from mailyard.smtp_ingress.spf_check import SpfResult

log = logging.getLogger(__name__)


class _OrgDomains:
    """Organizational domains (RFC 7489 3.2). publicsuffix2's lenient lookup answers "test"
    for "a.test" (a TLD missing from its list), which would align every domain under that
    TLD with every other; PSL's default rule "*" makes it "a.test"."""

    def __init__(self) -> None:
        self.psl = PublicSuffixList()

    def get_public_suffix(self, domain: str) -> str:   # the name the dmarc library calls
        found = self.psl.get_sld(domain, strict=True)
        if found:
            return str(found)
        labels = domain.split(".")
        return ".".join(labels[-2:]) if len(labels) >= 2 else domain


ORG_DOMAINS = _OrgDomains()
_EVALUATOR = dmarc.DMARC(publicsuffix=ORG_DOMAINS)


@dataclass(frozen=True)
class DmarcResult:
    result: str             # pass | fail | none | temperror | permerror
    domain: str             # header.from
    policy: str = "none"    # the disposition that applies: none | quarantine | reject


async def _record(resolver: AuthDns, domain: str) -> str | None:
    records = [r for r in await resolver.txt(f"_dmarc.{domain}")
               if r[:8].upper() == b"V=DMARC1"]
    if len(records) != 1:   # none, or several: RFC 7489 6.6.3 says no policy
        return None
    return records[0].decode("utf-8", "replace")


async def evaluate(resolver: AuthDns, from_domain: str, spf: SpfResult | None,
                   dkims: list[DkimResult]) -> DmarcResult:
    if not from_domain:
        return DmarcResult("none", "")
    try:
        record, org = await _record(resolver, from_domain), None
        if record is None:
            org = ORG_DOMAINS.get_public_suffix(from_domain)
            if org and org != from_domain:
                record = await _record(resolver, org)
    except TempError:
        return DmarcResult("temperror", from_domain)
    if record is None:
        return DmarcResult("none", from_domain)
    try:
        policy = _EVALUATOR.parse_record(record, domain=from_domain, org_domain=org)
    except dmarc.RecordSyntaxError as exc:
        log.debug("dmarc record of %s: %s", from_domain, exc)
        return DmarcResult("permerror", from_domain)
    spf_result = None
    if spf is not None and spf.domain:
        try:
            spf_result = dmarc.SPF(spf.domain, dmarc.SPFResult(spf.result))
        except ValueError:
            spf_result = None
    dkim_results = [dmarc.DKIM(d.domain, dmarc.DKIMResult(d.result), d.selector)
                    for d in dkims if d.domain and d.result in ("pass", "fail", "neutral",
                                                                "temperror", "permerror")]
    outcome = _EVALUATOR.get_result(policy, auth_results=dmarc.AuthResults(
        spf=spf_result, dkim=dkim_results or None))
    if outcome.result is dmarc.DMARCResult.PASS:
        return DmarcResult("pass", from_domain)
    disposition = outcome.disposition.value or "none"
    return DmarcResult("fail", from_domain, disposition)
