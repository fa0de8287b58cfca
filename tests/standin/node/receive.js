// Receives what edgeHub routes to this module's inputs with the official Azure IoT Node.js
// SDK: ModuleClient.fromEnvironment with the AMQP transport (IOTEDGE_* environment, workload
// API signs the token), `on('inputMessage')` (the SDK attaches its inputs receiver link on
// /devices/{d}/modules/{m}/messages/events when the listener is added), and `complete` for
// each message (an Accepted disposition). The edgeHub stand-in records the SDK's attach and
// dispositions: the reference the module's `azureiotsecurity echo` is compared with.
//
//   node receive.js <count> [dispositions]
// dispositions: a comma list, one per message in order (complete, reject, abandon; the SDK's
// Accepted, Rejected, Released), then complete.
// Prints one line per message: "input " + JSON {input, messageId, correlationId, to,
// contentType, contentEncoding, properties: {k: v}, annotations: {k: v} (the AMQP message
// annotations as rhea decoded them; a timestamp as epoch milliseconds), body (UTF-8 text)},
// and after <count> messages closes the client and exits 0; on an error prints it and exits 1.
'use strict';
const { ModuleClient } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const count = parseInt(process.argv[2] || '1', 10);
const dispositions = (process.argv[3] || '').split(',').filter((d) => d);
for (const d of dispositions) {
  if (!['complete', 'reject', 'abandon'].includes(d)) {
    console.error('unknown disposition ' + d);
    process.exit(1);
  }
}

function fail(what, err) {
  console.error(what + ': ' + (err && (err.stack || err.message || err)));
  process.exit(1);
}

setTimeout(() => fail('timeout', 'not ' + count + ' messages within 120 s'), 120000).unref();

function plain(v) {
  if (v instanceof Date) return v.getTime();
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (typeof v === 'bigint') return v.toString();
  return v;
}

ModuleClient.fromEnvironment(Amqp, (err, client) => {
  if (err) return fail('fromEnvironment', err);
  client.on('error', (e) => fail('client error', e));
  let seen = 0;
  client.open((err) => {
    if (err) return fail('open', err);
    client.on('inputMessage', (inputName, msg) => {
      const properties = {};
      for (let i = 0; i < msg.properties.count(); i++) {
        const p = msg.properties.getItem(i);
        properties[p.key] = p.value;
      }
      const annotations = {};
      const raw = (msg.transportObj && msg.transportObj.message_annotations) || {};
      for (const k of Object.keys(raw)) annotations[k] = plain(raw[k]);
      const data = msg.data === undefined ? null
        : Buffer.isBuffer(msg.data) ? msg.data.toString('utf8') : String(msg.data);
      console.log('input ' + JSON.stringify({
        input: inputName,
        messageId: msg.messageId === undefined ? null : msg.messageId,
        correlationId: msg.correlationId === undefined ? null : msg.correlationId,
        to: msg.to === undefined ? null : msg.to,
        contentType: msg.contentType === undefined ? null : msg.contentType,
        contentEncoding: msg.contentEncoding === undefined ? null : msg.contentEncoding,
        properties,
        annotations,
        body: data,
      }));
      const how = dispositions[seen] || 'complete';
      client[how](msg, (err) => {
        if (err) return fail(how, err);
        seen += 1;
        if (seen >= count) {
          client.close((err) => {
            if (err) return fail('close', err);
            process.exit(0);
          });
        }
      });
    });
  });
});
