// Shopify's own Node library (@shopify/shopify-api) judging what the emulator and the service
// produce. Driven by tests/integration/test_emulator_vs_shopify_api.py through
// tests/support/shopify_api.py: one JSON request on stdin, one JSON answer on stdout
// ({"ok": true, "result": ...} or {"ok": false, "error": {...}}); the library's logs go to stderr.
//
// The library only talks to https://{shop}/...; `emulator` (its base URL) makes every such
// request go to the emulator instead, the way the service's SHOPIFY_ADMIN_URL does.
import '@shopify/shopify-api/adapters/node';
import { ApiVersion, LogSeverity, RequestedTokenType, shopifyApi } from '@shopify/shopify-api';
import { setAbstractFetchFunc } from '@shopify/shopify-api/runtime';
import { RequestType, getHmac, getJwt, setUpValidRequest } from '@shopify/shopify-api/test-helpers';

function library(request) {
  const shopify = shopifyApi({
    apiKey: request.apiKey,
    apiSecretKey: request.apiSecret,
    apiVersion: request.apiVersion ?? ApiVersion.October25,
    hostName: 'app.example.com',
    isEmbeddedApp: true,
    logger: { level: LogSeverity.Warning, log: (_severity, message) => console.error(message) },
  });
  if (request.emulator) {
    const base = new URL(request.emulator);
    setAbstractFetchFunc(async (input, init) => {
      const url = new URL(typeof input === 'string' ? input : input.url);
      if (!url.hostname.endsWith('.myshopify.com')) throw new Error(`unexpected host ${url}`);
      url.protocol = base.protocol;
      url.host = base.host;
      return globalThis.fetch(url, init);
    });
  }
  return shopify;
}

function failure(error) {
  return {
    name: error?.constructor?.name ?? 'Error',
    message: String(error?.message ?? error),
    response: error?.response ?? null,
    body: error?.body ?? null,
  };
}

// A Session as plain JSON (its dates as ISO strings).
function plainSession(session) {
  return JSON.parse(JSON.stringify({ ...session }));
}

const commands = {
  // shopify.session.decodeSessionToken: the payload, or InvalidJwtError.
  async decodeSessionToken(shopify, { token }) {
    return await shopify.session.decodeSessionToken(token);
  },

  // shopify.webhooks.validate on a delivery as the app received it.
  async validateWebhook(shopify, { body, headers }) {
    const lowered = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    const rawRequest = { headers: lowered, method: 'POST', url: '/webhooks' };
    return await shopify.webhooks.validate({ rawBody: body, rawRequest, rawResponse: {} });
  },

  // shopify.flow.validate on a Flow action request as the app received it.
  async validateFlow(shopify, { body, headers, path }) {
    const lowered = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    const rawRequest = { headers: lowered, method: 'POST', url: path };
    return await shopify.flow.validate({ rawBody: body, rawRequest, rawResponse: {} });
  },

  // shopify.utils.validateHmac on a query (repeated keys as arrays): app proxy or OAuth.
  async validateHmac(shopify, { query, signator }) {
    return await shopify.utils.validateHmac(query, { signator });
  },

  async sanitizeHost(shopify, { host }) {
    return shopify.utils.sanitizeHost(host);
  },

  // The library's GraphqlClient against the emulator's Admin GraphQL.
  async graphql(shopify, { shop, accessToken, query, variables, retries }) {
    const session = shopify.session.customAppSession(shop);
    session.accessToken = accessToken;
    const client = new shopify.clients.Graphql({ session });
    const answer = await client.request(query, { variables, retries });
    return { data: answer.data, extensions: answer.extensions, headers: answer.headers };
  },

  // shopify.auth.tokenExchange, then (when expiring) shopify.auth.refreshToken.
  async tokenExchange(shopify, { shop, sessionToken, expiring, refresh, online }) {
    const requestedTokenType = online
      ? RequestedTokenType.OnlineAccessToken
      : RequestedTokenType.OfflineAccessToken;
    const { session } = await shopify.auth.tokenExchange({
      shop,
      sessionToken,
      requestedTokenType,
      expiring,
    });
    const result = { session: plainSession(session), active: session.isActive(undefined) };
    if (refresh) {
      const refreshed = await shopify.auth.refreshToken({ shop, refreshToken: session.refreshToken });
      result.refreshed = plainSession(refreshed.session);
      // A refresh token is used up once redeemed: the second use must fail.
      try {
        await shopify.auth.refreshToken({ shop, refreshToken: session.refreshToken });
        result.reusedRefreshToken = { ok: true };
      } catch (error) {
        result.reusedRefreshToken = { ok: false, error: failure(error) };
      }
    }
    return result;
  },

  // The library's own test helpers, signing as Shopify would, for the service to judge.
  async signSessionToken(_shopify, { shop, apiKey, apiSecret, overrides }) {
    return await getJwt(shop, apiKey, apiSecret, overrides ?? {});
  },
  async signWebhook(_shopify, { body, apiSecret }) {
    return getHmac(body, apiSecret);
  },
  async signAppProxyUrl(_shopify, { url, shop, apiKey, apiSecret }) {
    const signed = await setUpValidRequest(
      { type: RequestType.Public, store: shop, apiKey, apiSecretKey: apiSecret },
      new Request(url),
    );
    return signed.url;
  },
};

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const command = commands[request.command];
  if (!command) throw new Error(`unknown command ${request.command}`);
  let answer;
  try {
    answer = { ok: true, result: await command(library(request), request) };
  } catch (error) {
    answer = { ok: false, error: failure(error) };
  }
  process.stdout.write(JSON.stringify(answer));
}

await main();
