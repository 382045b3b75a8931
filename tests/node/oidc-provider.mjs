// A real OpenID Connect provider (the npm package oidc-provider) for the single sign-on tests
// (tests/api/test_oidc.py). Usage: node oidc-provider.mjs CONFIG.json
//
// CONFIG: {port, issuer, cert, key, client_id, client_secret, redirect_uri,
//          accounts: {id: {claims...}}}
// It serves HTTPS on 127.0.0.1:port with the given certificate. Logging in needs no form:
// GET /interaction/<uid>?account=<id> logs in as that account and grants the requested
// scopes (the test plays the person). POST /test/tamper {"aud"?, "exp"?, "sub"?} makes the
// next ID token the token endpoint issues carry those claims instead, signed with the
// provider's own key (for "wrong audience" and "expired" cases). It prints "ready" when it
// listens, and stops on SIGTERM.
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'test-signing-key', alg: 'RS256', use: 'sig' };
let tamper = null;

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: [config.redirect_uri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    roles: ['roles', 'realm_access'],
  },
  conformIdTokenClaims: false, // the ID token carries the scopes' claims (as Keycloak's does)
  findAccount: async (ctx, id) => (config.accounts[id]
    ? { accountId: id, claims: async () => ({ sub: id, ...config.accounts[id] }) }
    : undefined),
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['clientregistry-test-cookie-key'] },
});

provider.use(async (ctx, next) => {
  const interaction = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (interaction && ctx.method === 'GET') {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const accountId = String(ctx.query.account || '');
    if (!config.accounts[accountId]) {
      ctx.status = 400;
      ctx.body = `unknown account ${accountId}`;
      return;
    }
    const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
    grant.addOIDCScope(String(details.params.scope));
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    ctx.respond = false;
    return;
  }
  if (ctx.path === '/test/tamper' && ctx.method === 'POST') {
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    tamper = JSON.parse(body);
    ctx.status = 204;
    return;
  }
  await next();
  if (ctx.path === '/token' && tamper && ctx.body && ctx.body.id_token) {
    const claims = { ...jose.decodeJwt(ctx.body.id_token), ...tamper };
    tamper = null;
    ctx.body = {
      ...ctx.body,
      id_token: await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'JWT' })
        .sign(privateKey),
    };
  }
});

const server = https.createServer(
  { key: fs.readFileSync(config.key), cert: fs.readFileSync(config.cert) },
  provider.callback(),
);
server.listen(config.port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
