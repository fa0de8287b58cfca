// The module twin with the official Azure IoT Node.js SDK, the way an IoT Edge module uses it:
// ModuleClient.fromEnvironment with the AMQP transport (see send.js for the environment and
// the gateway port), then
//   1. client.getTwin()                          -> prints  desired <JSON of the desired>
//   2. twin.properties.reported.update(reported) -> prints  reported-updated
//   3. twin.get() again (a second GET)           -> prints  reported <JSON of the reported>
//   4. twin.on('properties.desired', …): the SDK emits the current desired once at once
//      (prints  initial <JSON>), then each patch edgeHub pushes (prints  patch <JSON>)
//   5. after <patches> patches: closes, prints  done  and exits 0.
// Each line is flushed as it happens, so a test can act on "listening" (printed once the
// handler is registered) before it pushes patches.
//
//   node twin.js <patches> <reported JSON>
// Any error: prints it on stderr and exits 1; no result within 60 s: exits 1.
'use strict';
const { ModuleClient } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');

const patches = parseInt(process.argv[2] || '0', 10);
const reported = JSON.parse(process.argv[3] || '{}');

function fail(what, err) {
  console.error(what + ': ' + (err && (err.stack || err.message || err)));
  process.exit(1);
}

function plain(props) {
  // The SDK's property objects carry functions (reported.update); print the data only.
  return JSON.stringify(props, (k, v) => (typeof v === 'function' ? undefined : v));
}

setTimeout(() => fail('timeout', 'no result within 60 s'), 60000).unref();
// The SDK may give up without calling back (the event loop then empties): that is a failure.
process.on('beforeExit', () => fail('stalled', 'the SDK stopped before the end'));

ModuleClient.fromEnvironment(Amqp, (err, client) => {
  if (err) return fail('fromEnvironment', err);
  client.on('error', (e) => fail('client error', e));
  client.open((err) => {
    if (err) return fail('open', err);
    client.getTwin((err, twin) => {
      if (err) return fail('getTwin', err);
      console.log('desired ' + plain(twin.properties.desired));
      twin.properties.reported.update(reported, (err) => {
        if (err) return fail('reported.update', err);
        console.log('reported-updated');
        twin.get((err, again) => {
          if (err) return fail('twin.get', err);
          console.log('reported ' + plain(again.properties.reported));
          let seen = 0;
          twin.on('error', (e) => fail('twin error', e));
          twin.on('properties.desired', (delta) => {
            seen += 1;
            if (seen === 1) {
              console.log('initial ' + plain(delta));
              console.log('listening');
            } else {
              console.log('patch ' + plain(delta));
            }
            if (seen > patches) {
              client.close((err) => {
                if (err) return fail('close', err);
                console.log('done');
                process.exit(0);
              });
            }
          });
        });
      });
    });
  });
});
