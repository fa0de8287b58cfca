// Sends one message to a module output with the official Azure IoT Node.js SDK:
// ModuleClient.fromEnvironment with the AMQP transport, `sendOutputEvent(output, message)`
// (the SDK adds the application property iothub-outputname on its telemetry link). The
// edgeHub stand-in records it and routes it by `/messages/modules/<m>/outputs/<output>`.
//
//   node output.js <output> <body> <messageId> [properties]
// properties: a JSON object of string keys and string values (`message.properties.add`).
// The body is sent as given (UTF-8 text, not necessarily JSON). Prints
// "sent <messageId> <result class>" and exits 0, or prints the error and exits 1.
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const output = process.argv[2];
const body = process.argv[3];
const messageId = process.argv[4];
let properties = {};
try {
  properties = JSON.parse(process.argv[5] || '{}');
} catch (e) {
  console.error('properties: not JSON: ' + e.message);
  process.exit(1);
}

function fail(what, err) {
  console.error(what + ': ' + (err && (err.stack || err.message || err)));
  process.exit(1);
}

if (!output || body === undefined || !messageId) fail('usage', 'output.js <output> <body> <messageId> [properties]');
setTimeout(() => fail('timeout', 'no result within 60 s'), 60000).unref();

ModuleClient.fromEnvironment(Amqp, (err, client) => {
  if (err) return fail('fromEnvironment', err);
  client.on('error', (e) => fail('client error', e));
  client.open((err) => {
    if (err) return fail('open', err);
    const m = new Message(body);
    m.messageId = messageId;
    for (const [k, v] of Object.entries(properties)) {
      m.properties.add(k, v);
    }
    client.sendOutputEvent(output, m, (err, result) => {
      if (err) return fail('sendOutputEvent', err);
      const kind = result && result.constructor ? result.constructor.name : String(result);
      console.log('sent ' + messageId + ' ' + kind);
      client.close((err) => {
        if (err) return fail('close', err);
        process.exit(0);
      });
    });
  });
});
