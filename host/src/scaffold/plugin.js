// {{name}}: a Sluice transform plugin (world `transform` of wit/plugin.wit).
//
// Adds `{{name}}.length`, the length of each record's message, and dead-letters a record
// that has no message. The message is the body after normalize; before it (this plugin
// first in the chain) a JSON line's message is an attribute (`message` or `msg` here) and the
// body is empty.

import { counterAdd } from "sluice:plugin/host@0.2.0";

export function init(config) {
  const unknown = Object.keys(JSON.parse(config));
  if (unknown.length) {
    // Refusing unknown keys makes a misspelt config fail at start-up.
    throw { message: `{{name}}: unknown config keys ${unknown}` };
  }
}

function text(record, key) {
  const a = record.attributes.find((a) => a.key === key && a.value.tag === "text");
  return a ? a.value.val : "";
}

export function process(batch) {
  for (const record of batch) {
    const message = record.body || text(record, "message") || text(record, "msg");
    if (!message) {
      record.route = { tag: "dlq", val: "{{name}}: the record has no message" };
    } else {
      record.attributes.push({
        key: "{{name}}.length",
        value: { tag: "integer", val: BigInt(message.length) },
      });
    }
  }
  counterAdd("records", BigInt(batch.length)); // once per batch, not per record
  return batch; // the same records: their origins are kept
}

export function tick(watermark) {
  return []; // nothing held back: nothing to emit as event time advances
}

// No state is kept between batches, so there is none to snapshot.
export const state = {
  snapshot(source) {
    return undefined;
  },
  restore(source, bytes) {},
  release(source) {},
};
