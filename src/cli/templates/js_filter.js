// {{name}}: an Eventyard filter. Keeps events whose priority is at least the plugin config's
// `min_priority` (default 1), drops the others with a reason.
import { get } from 'eventyard:plugin/config@0.2.0';

export function filter(event) {
  const minimum = JSON.parse(get() || '{}').min_priority ?? 1;
  if (event.priority() >= minimum) {
    return { tag: 'keep' };
  }
  return { tag: 'drop', val: `priority ${event.priority()} is below ${minimum}` };
}
