// The npm centrifuge SDK suite (suite.mjs) over the HTTP-streaming emulation transport only (POST /connection/http_stream + POST /emulation), over Node's fetch.
import { defineSdkSuite } from './suite.mjs';

await defineSdkSuite('http_stream');
