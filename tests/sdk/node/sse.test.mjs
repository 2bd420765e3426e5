// The npm centrifuge SDK suite (suite.mjs) over the SSE emulation transport only (GET /connection/sse + POST /emulation), the SDK's EventSource being npm eventsource.
import { defineSdkSuite } from './suite.mjs';

await defineSdkSuite('sse');
