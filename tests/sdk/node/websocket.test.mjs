// The npm centrifuge SDK suite (suite.mjs) over WebSocket (/connection/websocket), the SDK's WebSocket being npm ws.
import { defineSdkSuite } from './suite.mjs';

await defineSdkSuite('websocket');
