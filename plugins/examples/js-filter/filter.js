// Drops the noise of a busy service and routes security events to their own sink:
// health-check and readiness probes are dropped, and so are debug-and-below records;
// failed logins and denied requests go to the named route `security` (give it a sink in the
// host config, e.g. an SNS topic or its own index); everything else continues unchanged.
//
// Config (JSON), every key optional:
//   {"drop_paths": ["/health", "/healthz", "/readyz"], "drop_below": "info",
//    "security_route": "security"}

import { counterAdd } from "sluice:plugin/host@0.2.0";

const LEVELS = { trace: 1, debug: 5, info: 9, warn: 13, warning: 13, error: 17, fatal: 21 };

let dropPaths = new Set(["/health", "/healthz", "/readyz", "/livez"]);
let dropBelow = LEVELS.info;
let securityRoute = "security";

export function init(config) {
  const c = JSON.parse(config);
  for (const key of Object.keys(c)) {
    if (!["drop_paths", "drop_below", "security_route"].includes(key)) {
      throw { message: `filter: unknown config key \`${key}\`` };
    }
  }
  if (c.drop_paths) dropPaths = new Set(c.drop_paths);
  if (c.drop_below) {
    dropBelow = LEVELS[c.drop_below];
    if (!dropBelow) throw { message: `filter: drop_below must be one of ${Object.keys(LEVELS)}` };
  }
  if (c.security_route) securityRoute = c.security_route;
}

function text(record, key) {
  for (const a of record.attributes) {
    if (a.key === key) return a.value.tag === "text" ? a.value.val : String(a.value.val);
  }
  return undefined;
}

function integer(record, key) {
  for (const a of record.attributes) {
    if (a.key === key && a.value.tag === "integer") return Number(a.value.val);
  }
  return undefined;
}

// The message: the body after normalize, the `message`/`msg` attribute of a raw JSON line.
function message(record) {
  return record.body || text(record, "message") || text(record, "msg") || "";
}

function isSecurity(record) {
  const status = integer(record, "http.response.status_code");
  if (status === 401 || status === 403) return true;
  return /\b(login failed|authentication failed|invalid password|access denied)\b/i.test(message(record));
}

export function process(batch) {
  const out = [];
  let dropped = 0;
  let security = 0;
  for (const record of batch) {
    const path = text(record, "url.path");
    const level = record.severityNumber;
    if ((path && dropPaths.has(path)) || (level > 0 && level < dropBelow)) {
      dropped++; // not returned: dropped
      continue;
    }
    if (isSecurity(record)) {
      record.route = { tag: "named", val: securityRoute };
      security++;
    }
    out.push(record); // origin kept as it came
  }
  if (dropped) counterAdd("dropped", BigInt(dropped)); // once per batch, not per record
  if (security) counterAdd("security", BigInt(security));
  return out;
}

export function tick(watermark) {
  return [];
}

// No state: nothing to snapshot, restore or release.
export const state = {
  snapshot(source) {
    return undefined;
  },
  restore(source, bytes) {},
  release(source) {},
};
