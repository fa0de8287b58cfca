// Sends one security message with the official Azure IoT Node.js SDK, the way an IoT Edge
// module does: ModuleClient.fromEnvironment with the AMQP transport and the IOTEDGE_*
// environment (workload API at IOTEDGE_WORKLOADURI=unix://..., which signs the SAS token and
// gives the trust bundle). The edgeHub stand-in records the SDK's wire behaviour, the
// reference our module is compared with.
//
// Gateway port: the SDK honours a port in IOTEDGE_GATEWAYHOSTNAME. azure-iot-device-amqp
// (dist/amqp.js _getConnectionUri) connects to 'amqps://' + gatewayHostName, and
// azure-iot-amqp-base (dist/amqp.js connect) uses `parsedUrl.port ? parsedUrl.port : 5671`
// with hostname = the host part (so the AMQP Open hostname and the TLS name are "localhost"
// for "localhost:12345"). So the stand-in can run on any free port; no need for 5671.
//
//   node send.js [body] [messageId] [properties]
// properties: a JSON object of string keys and string values, each added with
// `message.properties.add(key, value)` (the application properties an IoT Edge module sets,
// e.g. MessagePriority as the classic agents send it).
// Prints "sent <messageId> <result class>" and exits 0, or prints the error and exits 1.
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const body = process.argv[2] || '{"AgentVersion":"node-sdk","Events":[]}';
const messageId = process.argv[3] || '8d6c1a4e-7b1f-5c3a-9e2d-0f1e2d3c4b5a';
let properties = {};
try {
  properties = JSON.parse(process.argv[4] || '{}');
} catch (e) {
  console.error('properties: not JSON: ' + e.message);
  process.exit(1);
}

function fail(what, err) {
  console.error(what + ': ' + (err && (err.stack || err.message || err)));
  process.exit(1);
}

setTimeout(() => fail('timeout', 'no result within 60 s'), 60000).unref();

ModuleClient.fromEnvironment(Amqp, (err, client) => {
  if (err) return fail('fromEnvironment', err);
  client.on('error', (e) => fail('client error', e));
  client.open((err) => {
    if (err) return fail('open', err);
    const m = new Message(body);
    m.messageId = messageId;
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    for (const [k, v] of Object.entries(properties)) {
      m.properties.add(k, v);
    }
    m.setAsSecurityMessage();
    client.sendEvent(m, (err, result) => {
      if (err) return fail('sendEvent', err);
      const kind = result && result.constructor ? result.constructor.name : String(result);
      console.log('sent ' + messageId + ' ' + kind);
      client.close((err) => {
        if (err) return fail('close', err);
        process.exit(0);
      });
    });
  });
});
