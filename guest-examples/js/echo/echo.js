// Echo responder for `infrahub/send.echo.request`, in JavaScript: answers each request with
// `infrahub/response/send.echo.request` whose `data.response` is "Reply to: <message>",
// keeping the request's correlation id (the same behaviour as the Rust example).

export function handle(event) {
  const request = JSON.parse(event.data());
  if (typeof request.message !== 'string') {
    throw { payload: { message: 'not an echo request: `message` is missing', retryable: false } };
  }
  const response = {
    meta: { correlation_id: event.correlationId() ?? null, priority: event.priority() },
    data: { response: `Reply to: ${request.message}` },
    errors: [],
    passed: true,
    routing_key: 'send.echo.request',
  };
  return [{ type: 'infrahub/response/send.echo.request', data: JSON.stringify(response) }];
}
