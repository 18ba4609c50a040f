// {{name}}: an Eventyard handler. Logs each event it gets and emits nothing; emit events by
// returning them (their types must be in the manifest's `emits`).
import { write } from 'eventyard:plugin/log@0.2.0';

export function handle(event) {
  const data = JSON.parse(event.data());
  write('info', `{{name}} got ${event.type()} (${Object.keys(data).length} fields)`);
  return [];
}
