/**
 * dns-records — the DNS records a sending domain needs, as zone-file lines a person can paste:
 * Easy DKIM's CNAMEs, the custom MAIL FROM subdomain's MX and SPF, a DMARC suggestion, and for
 * the direct-MX variant the HELO name's address and the domain's SPF.
 */

/** One DNS record; names without the trailing dot. */
export interface DnsRecord {
  name: string;
  type: "A" | "CNAME" | "MX" | "TXT";
  value: string;
}

/** The record as a zone-file line, names fully qualified (TTL and class left to the zone's defaults). */
export function zoneFileLine(record: DnsRecord): string {
  const value = record.type === "TXT" ? `"${record.value}"` : record.type === "A" ? record.value : `${record.value}.`;
  return `${record.name}. ${record.type} ${value}`;
}

/**
 * The custom MAIL FROM subdomain's records: SES receives bounces there and the SPF check of the
 * envelope sender passes for a name under the header From:'s domain, which DMARC's SPF alignment needs.
 */
export function mailFromRecords(mailFromDomain: string, region: string): DnsRecord[] {
  return [
    { name: mailFromDomain, type: "MX", value: `10 feedback-smtp.${region}.amazonses.com` },
    { name: mailFromDomain, type: "TXT", value: "v=spf1 include:amazonses.com ~all" },
  ];
}

/**
 * A first DMARC record: `p=none` with reports, because mail the agent sends straight to MX from
 * the home address may not pass SPF or carry an aligned DKIM signature; tighten to quarantine
 * once the reports show every path passing.
 */
export function dmarcSuggestion(domain: string): DnsRecord {
  return { name: `_dmarc.${domain}`, type: "TXT", value: `v=DMARC1; p=none; rua=mailto:postmaster@${domain}` };
}

/** For direct MX from a fixed address: the HELO name's A record (its PTR must name it back) and the domain's SPF. */
export function directMxRecords(domain: string, helo: string, address: string): DnsRecord[] {
  return [
    { name: helo, type: "A", value: address },
    { name: domain, type: "TXT", value: `v=spf1 ip4:${address} ~all` },
  ];
}
