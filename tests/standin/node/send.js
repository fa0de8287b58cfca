// Sends one security message with the official Azure IoT Node.js SDK, the way an IoT Edge
// module does (ModuleClient.fromEnvironment with the AMQP transport, IOTEDGE_* environment),
// so that the edgeHub stand-in records the SDK's wire behaviour for comparison with ours.
// Prints "sent <messageId>" and exits 0, or prints the error and exits 1.
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const body = process.argv[2] || '{"AgentVersion":"node-sdk","Events":[]}';
const messageId = process.argv[3] || '8d6c1a4e-7b1f-5c3a-9e2d-0f1e2d3c4b5a';

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
    m.setAsSecurityMessage();
    client.sendEvent(m, (err) => {
      if (err) return fail('sendEvent', err);
      console.log('sent ' + messageId);
      client.close(() => process.exit(0));
    });
  });
});
